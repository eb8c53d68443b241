//! Recording many dispatches into one submission.
//!
//! Dispatches are encoded into one pending command encoder; each one's params
//! block goes to its own aligned slot of a uniform arena and is bound at that
//! dynamic offset, so every dispatch keeps its own parameters however many
//! share a submission. The pending work is submitted when results are needed
//! (a read, a write, `synchronize`) or when the budget of recorded dispatches
//! (or the arena) is full.
//!
//! Ordering: the arena is written with `queue.write_buffer` just before the
//! submission that reads it; wgpu orders such a write after every earlier
//! submission and before this one, so reusing the arena for the next batch
//! never changes what an earlier batch reads.

use super::kernels::Kernel;

/// Dispatches recorded before a submission unless a read or sync comes first.
pub const DEFAULT_SUBMIT_BUDGET: u32 = 256;

/// Bytes of the uniform arena: room for [`DEFAULT_SUBMIT_BUDGET`] params
/// blocks at the largest offset alignment WebGPU allows (256 bytes).
pub const ARENA_BYTES: u64 = 256 * DEFAULT_SUBMIT_BUDGET as u64;

/// The work recorded since the last submission.
#[derive(Default)]
pub(super) struct Pending {
    pub encoder: Option<wgpu::CommandEncoder>,
    /// Params blocks at their arena offsets, uploaded at submission.
    pub params: Vec<u8>,
    pub dispatches: u32,
}

impl Pending {
    /// The arena offset for a params block of `size` bytes at `align`, or
    /// `None` when the arena is full.
    pub fn params_slot(&self, size: u64, align: u64) -> Option<u64> {
        let offset = (self.params.len() as u64).div_ceil(align) * align;
        (offset + size <= ARENA_BYTES).then_some(offset)
    }

    /// Record `params` at `offset` (from [`Pending::params_slot`]).
    pub fn push_params(&mut self, offset: u64, params: &[u8]) {
        self.params.resize(offset as usize, 0);
        self.params.extend_from_slice(params);
    }

    pub fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("diffinv batch"),
            })
        })
    }
}

/// One dispatch to record: a kernel, its params block, one buffer per storage
/// binding (in the kernel's order) and the workgroups to launch.
pub(super) struct Dispatch<'a> {
    pub kernel: &'static Kernel,
    pub pipeline: &'a wgpu::ComputePipeline,
    pub layout: &'a wgpu::BindGroupLayout,
    pub params: &'a [u8],
    pub buffers: &'a [&'a wgpu::Buffer],
    /// Workgroups in x, y and z.
    pub workgroups: [u32; 3],
}
