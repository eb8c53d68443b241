//! The wgpu backend: WGSL from `shaders/` on Vulkan, Metal or DX12 — and on
//! lavapipe (Mesa's CPU Vulkan), which is how shaders run where there is no GPU.
//!
//! One device and queue. Kernels come from a table ([`kernels`]) whose layouts
//! and pipelines are built once; dispatches are recorded into one pending
//! submission with per-dispatch params in a uniform arena (`recorder.rs`) and
//! submitted when results are needed. f16 tensors use `array<f16>` when the
//! adapter offers SHADER_F16 and a packed-u32 variant otherwise (or when
//! forced, so both are tested on one machine).

mod external;
mod fft;
mod guidance;
pub mod kernels;
mod krylov;
mod nn;
mod operator;
mod quiet;
mod recorder;
mod solver;
mod variants;

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, BackendKind, BufferInfo, BufferPool, CheckedRange};
use crate::error::{Error, Result};
use crate::tensor::{DType, HostSlice, HostVec};
pub use external::REQUIRED_USAGES;
use kernels::KernelCache;
use recorder::{Dispatch, Pending, ARENA_BYTES, DEFAULT_SUBMIT_BUDGET};
pub use variants::ShaderVariant;

/// Most workgroups one dispatch dimension may have (WebGPU's default limit);
/// kernels loop grid-stride over anything larger.
const MAX_WORKGROUPS: u32 = 65_535;

/// How to open the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgpuOptions {
    /// Use the packed-u32 f16 shaders even when the adapter offers SHADER_F16.
    pub force_packed_f16: bool,
    /// Accept a software (CPU) adapter such as lavapipe.
    pub allow_software: bool,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        WgpuOptions {
            force_packed_f16: false,
            allow_software: true,
        }
    }
}

/// A tensor's storage on the device.
pub struct WgpuBuffer {
    buffer: wgpu::Buffer,
    len: usize,
    dtype: DType,
}

impl WgpuBuffer {
    /// The wgpu buffer (allocated with STORAGE, COPY_SRC and COPY_DST usage).
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// The wgpu backend.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    native_f16: bool,
    kernels: KernelCache,
    /// Params blocks of the pending dispatches, at dynamic offsets.
    arena: wgpu::Buffer,
    params_align: u64,
    pending: Mutex<Pending>,
    /// Read-back buffer, reused (grown when a larger read comes).
    staging: Mutex<Option<wgpu::Buffer>>,
    pool: BufferPool<WgpuBuffer>,
    /// Errors wgpu reports outside an error scope (instead of its default panic).
    uncaptured: Arc<Mutex<Option<String>>>,
    launches: AtomicU64,
    host_syncs: AtomicU64,
    submissions: AtomicU64,
    workgroup_size: u32,
    max_workgroups: u32,
    submit_budget: u32,
}

fn device_error(message: impl Into<String>) -> Error {
    Error::Device {
        backend: "wgpu",
        message: message.into(),
    }
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::BackendUnavailable {
        backend: "wgpu",
        reason: reason.into(),
    }
}

/// Bytes a buffer of `len` elements occupies: rounded up to 4 (wgpu's copy
/// alignment), and never 0.
fn byte_size(len: usize, dtype: DType) -> u64 {
    ((len * dtype.size()).div_ceil(4) * 4).max(4) as u64
}

/// The 4-byte-aligned byte range covering `bytes` (wgpu copies in words).
fn word_range(bytes: &std::ops::Range<usize>) -> std::ops::Range<u64> {
    (bytes.start / 4 * 4) as u64..(bytes.end.div_ceil(4) * 4) as u64
}

impl WgpuBackend {
    /// Open the best adapter with default options (software adapters allowed).
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions::default())
    }

    /// Open the best adapter: hardware first, a software adapter only if allowed.
    pub fn with_options(options: WgpuOptions) -> Result<Self> {
        let adapters = quiet::enumerate_adapters();
        let mut adapters: Vec<_> = adapters
            .into_iter()
            .filter(|a| options.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
            .collect();
        // Discrete, then integrated, then anything else; software last.
        adapters.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu | wgpu::DeviceType::Other => 2,
            wgpu::DeviceType::Cpu => 3,
        });
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            unavailable(if options.allow_software {
                "no adapter found"
            } else {
                "no hardware adapter found"
            })
        })?;
        let info = adapter.get_info();
        let native_f16 =
            adapter.features().contains(wgpu::Features::SHADER_F16) && !options.force_packed_f16;
        let required_features = if native_f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        // The adapter's own limits: the defaults cap storage bindings at 128 MiB.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("diffinv"),
            required_features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| unavailable(format!("{} ({:?}): {e}", info.name, info.backend)))?;
        Ok(Self::on_device(device, queue, info, native_f16))
    }

    /// The backend on a device and queue the caller opened (its renderer's, say):
    /// every dispatch is submitted to `queue`. f16 tensors use `array<f16>` if
    /// the device was created with SHADER_F16 (and `options` do not force the
    /// packed shaders). The backend installs its own uncaptured-error handler
    /// on `device`, so wgpu errors come back as [`Error::Device`] instead of
    /// wgpu's default panic; a handler the caller had set is replaced.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, options: WgpuOptions) -> Self {
        let native_f16 =
            device.features().contains(wgpu::Features::SHADER_F16) && !options.force_packed_f16;
        let info = device.adapter_info();
        Self::on_device(device, queue, info, native_f16)
    }

    fn on_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        native_f16: bool,
    ) -> Self {
        let limits = device.limits();
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("diffinv params arena"),
            size: ARENA_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let max_workgroups = MAX_WORKGROUPS.min(limits.max_compute_workgroups_per_dimension);
        WgpuBackend {
            device,
            queue,
            info,
            native_f16,
            kernels: KernelCache::new(),
            arena,
            params_align: u64::from(limits.min_uniform_buffer_offset_alignment).max(4),
            pending: Mutex::new(Pending::default()),
            staging: Mutex::new(None),
            pool: BufferPool::default(),
            uncaptured,
            launches: AtomicU64::new(0),
            host_syncs: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            workgroup_size: 256,
            max_workgroups,
            submit_budget: DEFAULT_SUBMIT_BUDGET,
        }
    }

    /// Whether f16 tensors use `array<f16>` (else the packed-u32 shaders).
    pub fn uses_native_f16(&self) -> bool {
        self.native_f16
    }

    /// Whether the adapter is a software rasterizer (e.g. lavapipe).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The adapter's description.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device every buffer and pipeline of this backend lives on.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue this backend submits to. Work submitted here directly is
    /// ordered after this backend's submissions only once [`WgpuBackend::flush`]
    /// has run.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Largest buffer `alloc` accepts, in bytes: the device's storage-binding
    /// and buffer-size limits (the adapter's own, not WebGPU's 128 MiB default).
    pub fn max_buffer_bytes(&self) -> u64 {
        let limits = self.device.limits();
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
    }

    /// Queue submissions made so far (each carries every dispatch recorded since
    /// the previous one).
    pub fn submission_count(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// Invocations per workgroup (default 256), e.g. to test sizes that are
    /// not a power of two. Must be in 1..=256 (WebGPU's guaranteed limit).
    pub fn set_workgroup_size(&mut self, size: u32) -> Result<()> {
        if !(1..=256).contains(&size) {
            return Err(Error::InvalidParameter {
                name: "workgroup_size",
                value: f64::from(size),
                reason: "must be in 1..=256",
            });
        }
        self.workgroup_size = size;
        Ok(())
    }

    /// Cap the workgroups of one dispatch (default 65,535), so tests can
    /// exercise the grid-stride loop at small sizes.
    pub fn set_max_workgroups(&mut self, max: u32) -> Result<()> {
        if max == 0 || max > MAX_WORKGROUPS {
            return Err(Error::InvalidParameter {
                name: "max_workgroups",
                value: f64::from(max),
                reason: "must be in 1..=65535",
            });
        }
        self.max_workgroups = max;
        Ok(())
    }

    /// Dispatches recorded before a submission is forced (default 256, which
    /// the params arena also holds); 1 submits every dispatch on its own.
    pub fn set_submit_budget(&mut self, budget: u32) -> Result<()> {
        if !(1..=DEFAULT_SUBMIT_BUDGET).contains(&budget) {
            return Err(Error::InvalidParameter {
                name: "submit_budget",
                value: f64::from(budget),
                reason: "must be in 1..=256",
            });
        }
        self.submit_budget = budget;
        Ok(())
    }

    /// The shader variant computing on `dtype`, if the backend has one.
    fn variant(&self, dtype: DType) -> Option<ShaderVariant> {
        match dtype {
            DType::F32 => Some(ShaderVariant::F32),
            DType::F16 if self.native_f16 => Some(ShaderVariant::F16Native),
            DType::F16 => Some(ShaderVariant::F16Packed),
            DType::F64 | DType::C64 | DType::U32 => None,
        }
    }

    fn lock_pending(&self) -> Result<MutexGuard<'_, Pending>> {
        self.pending
            .lock()
            .map_err(|_| device_error("dispatch recorder poisoned"))
    }

    /// Record `kernel` over `items` invocations (grid-stride beyond the
    /// workgroup cap) with its params block and one buffer per storage binding.
    pub(crate) fn dispatch(
        &self,
        kernel: &'static kernels::Kernel,
        variant: ShaderVariant,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        items: usize,
    ) -> Result<()> {
        let workgroups =
            (items.div_ceil(self.workgroup_size as usize) as u32).clamp(1, self.max_workgroups);
        self.dispatch_grid(kernel, variant, params, buffers, [workgroups, 1, 1])
    }

    /// Record `kernel` over an explicit grid of workgroups (x, y, z), for
    /// kernels that map workgroups to tiles or rows rather than to elements.
    pub(crate) fn dispatch_grid(
        &self,
        kernel: &'static kernels::Kernel,
        variant: ShaderVariant,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<()> {
        if buffers.len() != kernel.bindings.len() || params.len() as u64 != kernel.params_size {
            return Err(Error::KernelSignature {
                kernel: kernel.entry,
                reason: format!(
                    "declared {} bindings and {} params bytes, given {} and {}",
                    kernel.bindings.len(),
                    kernel.params_size,
                    buffers.len(),
                    params.len()
                ),
            });
        }
        let pipeline = self
            .kernels
            .pipeline(&self.device, kernel, variant, self.workgroup_size)?;
        let layout = self.kernels.bind_group_layout(&self.device, kernel)?;
        let mut pending = self.lock_pending()?;
        self.record(
            &mut pending,
            Dispatch {
                kernel,
                pipeline: &pipeline,
                layout,
                params,
                buffers,
                workgroups,
            },
        )?;
        self.launches.fetch_add(1, Ordering::Relaxed);
        if pending.dispatches >= self.submit_budget {
            self.submit(&mut pending)?;
        }
        Ok(())
    }

    fn record(&self, pending: &mut Pending, d: Dispatch<'_>) -> Result<()> {
        let size = d.kernel.params_size;
        let offset = match pending.params_slot(size, self.params_align) {
            Some(offset) => offset,
            None => {
                self.submit(pending)?;
                pending
                    .params_slot(size, self.params_align)
                    .ok_or_else(|| device_error("params block larger than the arena"))?
            }
        };
        pending.push_params(offset, d.params);
        let params = wgpu::BufferBinding {
            buffer: &self.arena,
            offset: 0,
            size: NonZeroU64::new(size),
        };
        let entries: Vec<wgpu::BindGroupEntry<'_>> =
            std::iter::once(wgpu::BindingResource::Buffer(params))
                .chain(d.buffers.iter().map(|b| b.as_entire_binding()))
                .enumerate()
                .map(|(i, resource)| wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource,
                })
                .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: d.layout,
            entries: &entries,
        });
        let encoder = pending.encoder(&self.device);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(d.pipeline);
        // The arena offset fits u32: the arena is far smaller than 4 GiB.
        pass.set_bind_group(0, &bind_group, &[offset as u32]);
        let [x, y, z] = d.workgroups;
        pass.dispatch_workgroups(x, y, z);
        drop(pass);
        pending.dispatches += 1;
        Ok(())
    }

    /// Submit the pending work (its params first), if any.
    fn submit(&self, pending: &mut Pending) -> Result<()> {
        let Some(encoder) = pending.encoder.take() else {
            return Ok(());
        };
        if !pending.params.is_empty() {
            self.queue.write_buffer(&self.arena, 0, &pending.params);
        }
        self.queue.submit([encoder.finish()]);
        self.submissions.fetch_add(1, Ordering::Relaxed);
        pending.params.clear();
        pending.dispatches = 0;
        self.take_uncaptured()
    }

    /// Submit everything recorded so far without waiting for it.
    pub fn flush(&self) -> Result<()> {
        let mut pending = self.lock_pending()?;
        self.submit(&mut pending)
    }

    /// Block until the queue is idle, surfacing any error wgpu reported.
    fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_error(format!("waiting for the device: {e}")))?;
        self.take_uncaptured()
    }

    fn take_uncaptured(&self) -> Result<()> {
        match self.uncaptured.lock().map(|mut e| e.take()) {
            Ok(None) => Ok(()),
            Ok(Some(message)) => Err(device_error(message)),
            Err(_) => Err(device_error("error sink poisoned")),
        }
    }

    /// Bytes `range` (4-aligned) of `buffer`, through the reused staging buffer.
    /// Submits pending work first, so the read sees every recorded dispatch.
    fn read_words(&self, buffer: &wgpu::Buffer, range: std::ops::Range<u64>) -> Result<Vec<u8>> {
        self.host_syncs.fetch_add(1, Ordering::Relaxed);
        let size = range.end - range.start;
        let mut staging = self
            .staging
            .lock()
            .map_err(|_| device_error("staging buffer poisoned"))?;
        if staging.as_ref().is_none_or(|s| s.size() < size) {
            *staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("diffinv readback"),
                size: size.next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = staging
            .as_ref()
            .ok_or_else(|| device_error("staging buffer missing"))?;
        {
            let mut pending = self.lock_pending()?;
            let encoder = pending.encoder(&self.device);
            encoder.copy_buffer_to_buffer(buffer, range.start, staging, 0, size);
            self.submit(&mut pending)?;
        }
        let slice = staging.slice(..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| device_error("readback callback never ran"))?
            .map_err(|e| device_error(format!("mapping the readback buffer: {e}")))?;
        let bytes = slice
            .get_mapped_range()
            .map_err(|e| device_error(format!("reading the readback buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }
}

/// Recorded work is submitted, not lost, when the backend goes away: a caller
/// may still hold the buffers it wrote (they keep the device alive).
impl Drop for WgpuBackend {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;

    fn kind(&self) -> BackendKind {
        BackendKind::Wgpu
    }

    fn device_name(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    fn supports(&self, dtype: DType) -> bool {
        dtype != DType::F64
    }

    fn alloc(&self, len: usize, dtype: DType) -> Result<WgpuBuffer> {
        if !self.supports(dtype) {
            return Err(Error::UnsupportedDType {
                backend: "wgpu",
                dtype,
            });
        }
        let size = byte_size(len, dtype);
        let max = self.max_buffer_bytes();
        if size > max {
            return Err(Error::TooLarge {
                backend: "wgpu",
                bytes: size,
                limit: max,
            });
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        // Scopes pop innermost first.
        for scope in [invalid, oom] {
            if let Some(e) = pollster::block_on(scope.pop()) {
                return Err(device_error(format!("allocating {size} bytes: {e}")));
            }
        }
        Ok(WgpuBuffer { buffer, len, dtype })
    }

    fn buffer_info(buf: &WgpuBuffer) -> BufferInfo {
        BufferInfo {
            dtype: buf.dtype,
            len: buf.len,
        }
    }

    fn zero(&self, buf: &mut WgpuBuffer) -> Result<()> {
        // Recorded with the pending dispatches: ordered after them, no transfer.
        let mut pending = self.lock_pending()?;
        pending.encoder(&self.device).clear_buffer(
            &buf.buffer,
            0,
            Some(byte_size(buf.len, buf.dtype)),
        );
        Ok(())
    }

    fn copy_checked(&self, src: &WgpuBuffer, dst: &mut WgpuBuffer) -> Result<()> {
        // Recorded with the pending dispatches: ordered after them.
        let mut pending = self.lock_pending()?;
        let size = byte_size(src.len, src.dtype);
        pending
            .encoder(&self.device)
            .copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, size);
        Ok(())
    }

    fn write_checked(
        &self,
        buf: &mut WgpuBuffer,
        range: CheckedRange,
        data: HostSlice<'_>,
    ) -> Result<()> {
        let bytes = data.storage_bytes(range.dtype())?;
        let exact = range.bytes();
        let words = word_range(&exact);
        // A write is ordered before the next submission: submit what was
        // recorded first, or those dispatches would see the new data.
        self.flush()?;
        // Bytes past the buffer's last element are allocation padding: a write
        // that ends there may overwrite them.
        let ends_at_padding = exact.end == buf.len * buf.dtype.size();
        if words.start as usize == exact.start && words.end as usize == exact.end {
            self.queue.write_buffer(&buf.buffer, words.start, &bytes);
        } else if words.start as usize == exact.start && ends_at_padding {
            let mut padded = bytes.into_owned();
            padded.resize((words.end - words.start) as usize, 0);
            self.queue.write_buffer(&buf.buffer, words.start, &padded);
        } else {
            // A range that starts or ends inside a word (odd f16 views): keep the
            // neighbouring halves by patching the covering words.
            let mut covering = self.read_words(&buf.buffer, words.clone())?;
            let at = exact.start - words.start as usize;
            covering[at..at + bytes.len()].copy_from_slice(&bytes);
            self.queue.write_buffer(&buf.buffer, words.start, &covering);
        }
        Ok(())
    }

    fn read_checked(&self, buf: &WgpuBuffer, range: CheckedRange) -> Result<HostVec> {
        let exact = range.bytes();
        let words = word_range(&exact);
        let mut out = HostVec::zeroed(range.dtype(), range.len());
        if range.is_empty() {
            return Ok(out);
        }
        let bytes = self.read_words(&buf.buffer, words.clone())?;
        let at = exact.start - words.start as usize;
        out.bytes_mut()
            .copy_from_slice(&bytes[at..at + exact.len()]);
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        self.host_syncs.fetch_add(1, Ordering::Relaxed);
        self.flush()?;
        self.wait()
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn host_sync_count(&self) -> u64 {
        self.host_syncs.load(Ordering::Relaxed)
    }

    fn pool(&self) -> &BufferPool<WgpuBuffer> {
        &self.pool
    }
}
