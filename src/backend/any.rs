//! The run-time choice of backend: [`select`] opens one, [`AnyBackend::run`]
//! calls a function generic over the backend with it.
//!
//! Everything above the backends is generic over `B: Ops`, so this is the only
//! `match` over backend kinds in the crate, and a new kernel family never
//! touches it: it adds a supertrait to [`Ops`] instead.

use super::{cpu, Backend, BackendKind};
use crate::error::{Error, Result};
use crate::ops::Ops;

/// One of the compiled-in backends.
// One value per process: boxing the larger variants would only add an indirection.
#[allow(clippy::large_enum_variant)]
pub enum AnyBackend {
    Cpu(cpu::CpuBackend),
    #[cfg(feature = "cuda")]
    Cuda(super::cuda::CudaBackend),
    #[cfg(feature = "wgpu")]
    Wgpu(super::wgpu::WgpuBackend),
}

/// A computation generic over the backend: Rust has no generic closures, so
/// the body a caller runs on an [`AnyBackend`] is a type with a generic method.
///
/// ```
/// use diffinv::{backend::BackendFn, select, Backend, Ops};
/// struct Name;
/// impl BackendFn for Name {
///     type Output = String;
///     fn call<B: Ops>(self, backend: &B) -> String {
///         backend.device_name()
///     }
/// }
/// let chosen = select(Some("cpu")).unwrap();
/// assert!(chosen.backend.run(Name).starts_with("host CPU"));
/// ```
pub trait BackendFn {
    type Output;
    fn call<B: Ops>(self, backend: &B) -> Self::Output;
}

impl AnyBackend {
    /// Run `f` on the wrapped backend.
    pub fn run<F: BackendFn>(&self, f: F) -> F::Output {
        match self {
            AnyBackend::Cpu(b) => f.call(b),
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda(b) => f.call(b),
            #[cfg(feature = "wgpu")]
            AnyBackend::Wgpu(b) => f.call(b),
        }
    }

    pub fn kind(&self) -> BackendKind {
        struct Kind;
        impl BackendFn for Kind {
            type Output = BackendKind;
            fn call<B: Ops>(self, b: &B) -> BackendKind {
                b.kind()
            }
        }
        self.run(Kind)
    }

    /// Whether this backend is a GPU: not the CPU reference and not a
    /// software adapter (lavapipe), where work runs faster on the host.
    pub fn is_gpu(&self) -> bool {
        match self {
            AnyBackend::Cpu(_) => false,
            #[cfg(feature = "cuda")]
            AnyBackend::Cuda(_) => true,
            #[cfg(feature = "wgpu")]
            AnyBackend::Wgpu(b) => !b.is_software(),
        }
    }

    pub fn device_name(&self) -> String {
        struct Name;
        impl BackendFn for Name {
            type Output = String;
            fn call<B: Ops>(self, b: &B) -> String {
                b.device_name()
            }
        }
        self.run(Name)
    }
}

/// What [`select`] chose and why.
pub struct Selection {
    pub backend: AnyBackend,
    /// One line per candidate considered, ending with the chosen one.
    pub reason: String,
}

/// Choose a backend by name: `cpu`, `wgpu`, `cuda` or `auto`. `None` reads
/// `DIFFINV_BACKEND` and defaults to `auto`.
///
/// `auto` picks CUDA if a device opens, else a wgpu adapter that is not a CPU
/// (software) adapter, else the CPU reference; the returned reason says what
/// was tried and why each candidate was skipped.
pub fn select(name: Option<&str>) -> Result<Selection> {
    let env = std::env::var("DIFFINV_BACKEND").ok();
    let name = name
        .map(str::to_owned)
        .or(env)
        .unwrap_or_else(|| "auto".into());
    match name.trim().to_ascii_lowercase().as_str() {
        "cpu" => Ok(Selection {
            backend: AnyBackend::Cpu(cpu::CpuBackend::new()),
            reason: "cpu: requested".into(),
        }),
        "cuda" => open_cuda().map(|b| Selection {
            backend: b,
            reason: "cuda: requested".into(),
        }),
        "wgpu" => open_wgpu(true).map(|b| Selection {
            backend: b,
            reason: "wgpu: requested".into(),
        }),
        "auto" => Ok(select_auto()),
        _ => Err(Error::UnknownBackend { name }),
    }
}

fn select_auto() -> Selection {
    let mut log = Vec::new();
    let chosen = |backend, log: &mut Vec<String>, why: &str| {
        log.push(why.to_string());
        Selection {
            backend,
            reason: log.join("; "),
        }
    };
    match open_cuda() {
        Ok(b) => return chosen(b, &mut log, "cuda: device opened"),
        Err(e) => log.push(format!("cuda skipped ({e})")),
    }
    match open_wgpu(false) {
        Ok(b) => return chosen(b, &mut log, "wgpu: hardware adapter found"),
        Err(e) => log.push(format!("wgpu skipped ({e})")),
    }
    let cpu = AnyBackend::Cpu(cpu::CpuBackend::new());
    chosen(cpu, &mut log, "cpu: reference backend")
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<AnyBackend> {
    super::cuda::CudaBackend::new(0).map(AnyBackend::Cuda)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<AnyBackend> {
    Err(Error::BackendUnavailable {
        backend: "cuda",
        reason: "built without the `cuda` feature".into(),
    })
}

#[cfg(feature = "wgpu")]
fn open_wgpu(allow_software: bool) -> Result<AnyBackend> {
    let b = super::wgpu::WgpuBackend::new()?;
    if !allow_software && b.is_software() {
        return Err(Error::BackendUnavailable {
            backend: "wgpu",
            reason: format!(
                "only a CPU (software) adapter is present: {}",
                b.device_name()
            ),
        });
    }
    Ok(AnyBackend::Wgpu(b))
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(_allow_software: bool) -> Result<AnyBackend> {
    Err(Error::BackendUnavailable {
        backend: "wgpu",
        reason: "built without the `wgpu` feature".into(),
    })
}
