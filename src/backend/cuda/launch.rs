//! Typed kernel arguments: what a launcher passes, checked against what the
//! kernel declares before anything reaches the device.
//!
//! A launcher builds [`KernelArgs`] with `value` (a `#[repr(C)]` params block),
//! `input` (a buffer the kernel reads) and `output` (a buffer it writes). The
//! access is part of the argument, so a device can order the launch after
//! earlier writes (and reads, for outputs) and record the launch as the
//! buffer's last reader or writer — cudarc's stream events on a real GPU.

use crate::error::{Error, Result};

/// A kernel parameter as declared in a kernel table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// A value passed by copy, of this many bytes.
    Value(usize),
    /// A device pointer the kernel only reads.
    In,
    /// A device pointer the kernel writes (and may read).
    Out,
}

/// A `kernels/<family>.cu` file and how NVRTC compiles it.
#[derive(Debug)]
pub struct Module {
    /// Position in [`super::kernels::MODULES`].
    pub id: usize,
    /// File stem (`solver` for `kernels/solver.cu`).
    pub name: &'static str,
    pub source: &'static str,
    /// Whether `a·b + c` may become an FMA. Off for families that promise
    /// bit-exactness with the CPU reference (`--fmad=false`); on, with stated
    /// tolerances, for conv/GEMM/attention-style kernels.
    pub contract_fma: bool,
}

/// One `extern "C" __global__` entry point and its parameter list.
#[derive(Debug)]
pub struct Kernel {
    /// Position in [`super::kernels::KERNELS`]: the index devices cache the
    /// loaded function under, so a launch never looks a kernel up by name.
    pub id: usize,
    pub module: &'static Module,
    pub name: &'static str,
    pub params: &'static [Param],
}

/// One argument of a launch.
pub enum Arg<'a, M> {
    /// The bytes of a value parameter.
    Value(&'a [u8]),
    /// A buffer the kernel reads.
    In(&'a M),
    /// A buffer the kernel writes.
    Out(&'a mut M),
}

impl<M> Arg<'_, M> {
    /// The parameter kind this argument fills.
    pub fn param(&self) -> Param {
        match self {
            Arg::Value(b) => Param::Value(b.len()),
            Arg::In(_) => Param::In,
            Arg::Out(_) => Param::Out,
        }
    }
}

/// The arguments of one launch, in the kernel's parameter order.
pub struct KernelArgs<'a, M> {
    args: Vec<Arg<'a, M>>,
}

impl<M> Default for KernelArgs<'_, M> {
    fn default() -> Self {
        KernelArgs {
            args: Vec::with_capacity(8),
        }
    }
}

impl<'a, M> KernelArgs<'a, M> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A value parameter (a `#[repr(C)]` params block or a scalar).
    pub fn value<T: bytemuck::Pod>(mut self, v: &'a T) -> Self {
        self.args.push(Arg::Value(bytemuck::bytes_of(v)));
        self
    }

    /// A buffer the kernel reads.
    pub fn input(mut self, mem: &'a M) -> Self {
        self.args.push(Arg::In(mem));
        self
    }

    /// A buffer the kernel writes.
    pub fn output(mut self, mem: &'a mut M) -> Self {
        self.args.push(Arg::Out(mem));
        self
    }

    /// The parameter kinds these arguments fill, in order.
    pub fn signature(&self) -> Vec<Param> {
        self.args.iter().map(Arg::param).collect()
    }

    /// Whether the arguments fill `kernel`'s parameters exactly.
    pub fn check(&self, kernel: &Kernel) -> Result<()> {
        let got = self.signature();
        if got != kernel.params {
            return Err(Error::KernelSignature {
                kernel: kernel.name,
                reason: format!("declared {:?}, given {:?}", kernel.params, got),
            });
        }
        Ok(())
    }

    pub fn as_slice(&self) -> &[Arg<'a, M>] {
        &self.args
    }

    pub fn as_mut_slice(&mut self) -> &mut [Arg<'a, M>] {
        &mut self.args
    }
}

/// `cuLaunchKernel`'s `kernelParams`: one pointer per parameter, at the
/// parameter's value — a value's own bytes (`Some` in `values`) or the device
/// address in `addresses` (same position). The pointers are valid while the
/// value bytes and `addresses` are.
pub fn kernel_params(
    values: &[Option<*const u8>],
    addresses: &mut [u64],
) -> Vec<*mut std::ffi::c_void> {
    values
        .iter()
        .zip(addresses.iter_mut())
        .map(|(value, addr)| match value {
            Some(bytes) => bytes.cast_mut().cast(),
            None => (addr as *mut u64).cast(),
        })
        .collect()
}

/// The value pointers of `args` for [`kernel_params`], for devices whose
/// buffers need no per-launch bookkeeping.
pub fn value_pointers<M>(args: &[Arg<'_, M>]) -> Vec<Option<*const u8>> {
    args.iter()
        .map(|arg| match arg {
            Arg::Value(bytes) => Some(bytes.as_ptr()),
            Arg::In(_) | Arg::Out(_) => None,
        })
        .collect()
}
