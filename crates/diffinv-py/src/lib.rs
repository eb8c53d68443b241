//! Python binding of diffinv: plans and the fused solver step on any array
//! that speaks DLPack (`__dlpack__`: numpy, PyTorch, JAX, CuPy), without
//! copies — the kernel reads and writes the array's own memory.
//!
//! A run lives on the CPU (`device="cpu"`, arrays f16, f32 or f64) or on a
//! CUDA device (`device="cuda:N"`, arrays f16 or f32 on that device), always
//! C-contiguous; anything else is a `ValueError` (device, layout) or
//! `TypeError` (dtype, not DLPack) naming the reason, and a CUDA device that
//! cannot be opened a `RuntimeError` with the driver's reason. The array is
//! borrowed through its DLPack capsule for one call: the capsule is never
//! marked consumed, so dropping it returns the array to its owner through the
//! producer's own deleter.
//!
//! CUDA arrays follow DLPack's stream protocol: the binding asks
//! `__dlpack_device__()` first, then `__dlpack__(stream=S)` with S the run's
//! own stream, so the producer orders its pending writes before our step. The
//! protocol has no way back, so the step waits for its stream before it
//! returns: the producer's later work sees the result.

use std::ffi::{c_void, CStr};
use std::sync::OnceLock;

use std::collections::HashMap;
use std::sync::Mutex;

use diffinv_core::backend::cpu::{CpuBackend, CpuBuffer};
use diffinv_core::backend::cuda::CudaBackend;
use diffinv_core::backend::Backend;
use diffinv_core::schedule::{BetaSchedule, FinalSigma, GridSpec, NoiseSchedule, Spacing};
use diffinv_core::{
    DType, Error, Plan as CorePlan, PlanConfig, Prediction, SamplerOptions, SecondOrder, Shape,
    Solver, SolverRun, Tensor,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The DLPack structs this binding reads (dlpack.h, version 0.8 layout,
/// which `__dlpack__()` without `max_version` returns).
#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

const KDL_CPU: i32 = 1;
const KDL_CUDA: i32 = 2;
const KDL_FLOAT: u8 = 2;
const DLTENSOR: &CStr = c"dltensor";

fn device_name(t: i32) -> &'static str {
    match t {
        1 => "cpu",
        2 => "cuda",
        3 => "cuda_host",
        4 => "opencl",
        7 => "vulkan",
        8 => "metal",
        10 => "rocm",
        13 => "cuda_managed",
        _ => "another device",
    }
}

/// One array, borrowed through its DLPack capsule for the duration of a call.
struct Borrowed<'py> {
    /// Keeps the producer's tensor alive; dropping it runs the producer's deleter.
    _capsule: Bound<'py, PyAny>,
    data: *mut c_void,
    dtype: DType,
    shape: Vec<usize>,
}

/// Where a run's arrays must live.
#[derive(Clone, Copy)]
enum Place {
    Cpu,
    /// Device `ordinal`, whose arrays are made ready on `stream` (a
    /// `cudaStream_t` as DLPack passes it).
    Cuda {
        ordinal: usize,
        stream: usize,
    },
}

impl Place {
    fn describe(self) -> String {
        match self {
            Place::Cpu => "cpu".into(),
            Place::Cuda { ordinal, .. } => format!("cuda:{ordinal}"),
        }
    }

    /// Whether an array on DLPack device `(device_type, device_id)` is here.
    fn holds(self, device_type: i32, device_id: i32) -> bool {
        match self {
            Place::Cpu => device_type == KDL_CPU,
            Place::Cuda { ordinal, .. } => {
                device_type == KDL_CUDA && usize::try_from(device_id).is_ok_and(|d| d == ordinal)
            }
        }
    }

    /// The refusal of an array on `(device_type, device_id)`.
    fn refuse(self, what: &str, device_type: i32, device_id: i32) -> PyErr {
        let hint = if matches!(self, Place::Cpu) && device_type == KDL_CUDA {
            format!(" (a Run made with device=\"cuda:{device_id}\" takes it)")
        } else {
            String::new()
        };
        PyValueError::new_err(format!(
            "{what}: the array is on {} (device {device_id}); this Run is on {}{hint}",
            device_name(device_type),
            self.describe()
        ))
    }
}

/// The array behind `obj`'s `__dlpack__`, checked: on the run's device (asked
/// of `__dlpack_device__` first, where the producer has it, so a CPU producer
/// is never handed a stream), a real float dtype, C-contiguous.
fn borrow<'py>(obj: &Bound<'py, PyAny>, what: &str, place: Place) -> PyResult<Borrowed<'py>> {
    if !obj.hasattr("__dlpack__")? {
        return Err(PyTypeError::new_err(format!(
            "{what}: expected an array with __dlpack__ (numpy, torch, jax, cupy), got {}",
            obj.get_type().name()?
        )));
    }
    if obj.hasattr("__dlpack_device__")? {
        let (device_type, device_id): (i32, i32) =
            obj.call_method0("__dlpack_device__")?.extract()?;
        if !place.holds(device_type, device_id) {
            return Err(place.refuse(what, device_type, device_id));
        }
    }
    let capsule = match place {
        Place::Cpu => obj.call_method0("__dlpack__")?,
        Place::Cuda { stream, .. } => {
            let kwargs = PyDict::new(obj.py());
            kwargs.set_item("stream", stream)?;
            obj.call_method("__dlpack__", (), Some(&kwargs))?
        }
    };
    // SAFETY: a valid object pointer; GetPointer checks the type and the name
    // and returns null (with an exception set) otherwise.
    let managed = unsafe { pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), DLTENSOR.as_ptr()) }
        as *const DLManagedTensor;
    if managed.is_null() {
        return Err(PyErr::take(obj.py()).unwrap_or_else(|| {
            PyTypeError::new_err(format!(
                "{what}: __dlpack__ did not return a dltensor capsule"
            ))
        }));
    }
    // SAFETY: a live DLManagedTensor owned by the capsule, which we hold.
    let t = unsafe { &(*managed).dl_tensor };
    if !place.holds(t.device.device_type, t.device.device_id) {
        return Err(place.refuse(what, t.device.device_type, t.device.device_id));
    }
    let dtype = match (t.dtype.code, t.dtype.bits, t.dtype.lanes) {
        (KDL_FLOAT, 16, 1) => DType::F16,
        (KDL_FLOAT, 32, 1) => DType::F32,
        (KDL_FLOAT, 64, 1) => DType::F64,
        (code, bits, lanes) => {
            return Err(PyTypeError::new_err(format!(
                "{what}: dtype (DLPack code {code}, {bits} bits, {lanes} lanes) is not \
                 float16, float32 or float64"
            )))
        }
    };
    let ndim = usize::try_from(t.ndim).unwrap_or(0);
    let dims: Vec<i64> = if ndim == 0 {
        Vec::new()
    } else {
        // SAFETY: DLPack guarantees `ndim` shape entries.
        unsafe { std::slice::from_raw_parts(t.shape, ndim) }.to_vec()
    };
    let shape: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    if !t.strides.is_null() {
        // SAFETY: DLPack guarantees `ndim` stride entries when non-null.
        let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
        let mut expected = 1i64;
        for (&d, &s) in dims.iter().zip(strides).rev() {
            // A dimension of extent 1 may carry any stride.
            if d != 1 && s != expected {
                return Err(PyValueError::new_err(format!(
                    "{what}: the array is not C-contiguous (shape {dims:?}, strides {strides:?} \
                     in elements); pass a contiguous array (e.g. numpy.ascontiguousarray)"
                )));
            }
            expected *= d;
        }
    }
    // SAFETY: data + byte_offset is the first element (DLPack's definition).
    let data = unsafe { t.data.cast::<u8>().add(t.byte_offset as usize) }.cast::<c_void>();
    Ok(Borrowed {
        _capsule: capsule,
        data,
        dtype,
        shape,
    })
}

fn to_py(e: Error) -> PyErr {
    match e {
        Error::DTypeMismatch { .. } | Error::UnsupportedDType { .. } => {
            PyTypeError::new_err(e.to_string())
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// A sampling plan: every step's scalars, computed once in f64.
#[pyclass(module = "diffinv", frozen)]
struct Plan {
    plan: CorePlan,
}

#[pymethods]
impl Plan {
    /// Build a plan. `solver`: "dpmpp" (DPM-Solver++ of `order` 1..3, `heun`
    /// for Heun's second-order rule), "unipc" or "ddim" (with `eta`); the
    /// schedule: `beta_schedule` ("linear", "scaled_linear",
    /// "squaredcos_cap_v2"), `beta_start`, `beta_end`, `train_steps`; the grid:
    /// diffusers `timestep_spacing` and `steps_offset`; `final_sigma` ("zero"
    /// or "sigma_min"); `prediction` ("epsilon" or "v_prediction").
    #[new]
    #[pyo3(signature = (
        steps, solver = "dpmpp", order = 2, heun = false, lower_order_final = true,
        euler_at_final = false, eta = 0.0, beta_schedule = "linear", beta_start = 1e-4,
        beta_end = 0.02, train_steps = 1000, timestep_spacing = "leading", steps_offset = 0,
        final_sigma = "zero", prediction = "epsilon"
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        steps: usize,
        solver: &str,
        order: u8,
        heun: bool,
        lower_order_final: bool,
        euler_at_final: bool,
        eta: f64,
        beta_schedule: &str,
        beta_start: f64,
        beta_end: f64,
        train_steps: usize,
        timestep_spacing: &str,
        steps_offset: usize,
        final_sigma: &str,
        prediction: &str,
    ) -> PyResult<Self> {
        let solver = match solver {
            "dpmpp" => Solver::DpmSolverPP {
                order,
                second_order: if heun {
                    SecondOrder::Heun
                } else {
                    SecondOrder::Midpoint
                },
                lower_order_final,
                euler_at_final,
            },
            "unipc" => Solver::UniPc,
            "ddim" => Solver::Ddim { eta },
            other => {
                return Err(PyValueError::new_err(format!(
                    "solver {other:?}: expected \"dpmpp\", \"unipc\" or \"ddim\""
                )))
            }
        };
        let betas =
            BetaSchedule::from_diffusers(beta_schedule, beta_start, beta_end).map_err(to_py)?;
        let schedule = NoiseSchedule::new(betas, train_steps).map_err(to_py)?;
        let final_sigma = match final_sigma {
            "zero" => FinalSigma::Zero,
            "sigma_min" => FinalSigma::SigmaMin,
            other => {
                return Err(PyValueError::new_err(format!(
                    "final_sigma {other:?}: expected \"zero\" or \"sigma_min\""
                )))
            }
        };
        let prediction = match prediction {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::V,
            other => {
                return Err(PyValueError::new_err(format!(
                    "prediction {other:?}: expected \"epsilon\" or \"v_prediction\""
                )))
            }
        };
        let config = PlanConfig {
            solver,
            grid: GridSpec::Diffusers {
                spacing: Spacing::from_name(timestep_spacing).map_err(to_py)?,
                steps_offset,
            },
            steps,
            final_sigma,
            prediction,
        };
        let plan = CorePlan::new(&schedule, &config).map_err(to_py)?;
        Ok(Plan { plan })
    }

    /// The network time (diffusers timestep) of every step, in order.
    #[getter]
    fn timesteps(&self) -> Vec<f64> {
        self.plan.steps.iter().map(|s| s.point.tau).collect()
    }

    fn __len__(&self) -> usize {
        self.plan.len()
    }
}

/// The CPU backend every run uses (stateless apart from its counters).
fn backend() -> &'static CpuBackend {
    static BACKEND: OnceLock<CpuBackend> = OnceLock::new();
    BACKEND.get_or_init(CpuBackend::new)
}

/// The CUDA backend of device `ordinal`, opened once per process (each has
/// its own stream) and kept, like the CPU backend, for every later run there.
fn cuda_backend(ordinal: usize) -> PyResult<&'static CudaBackend> {
    static OPENED: OnceLock<Mutex<HashMap<usize, &'static CudaBackend>>> = OnceLock::new();
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| PyRuntimeError::new_err("the CUDA backend registry is poisoned"))?;
    if let Some(b) = opened.get(&ordinal) {
        return Ok(b);
    }
    let backend = CudaBackend::new(ordinal)
        .map_err(|e| PyRuntimeError::new_err(format!("device \"cuda:{ordinal}\": {e}")))?;
    let backend: &'static CudaBackend = Box::leak(Box::new(backend));
    opened.insert(ordinal, backend);
    Ok(backend)
}

/// `"cpu"`, `"cuda"` (device 0) or `"cuda:N"`.
fn device_ordinal(device: &str) -> PyResult<Option<usize>> {
    let bad = || {
        PyValueError::new_err(format!(
            "device {device:?}: expected \"cpu\", \"cuda\" or \"cuda:N\""
        ))
    };
    match device.split_once(':') {
        None if device == "cpu" => Ok(None),
        None if device == "cuda" => Ok(Some(0)),
        Some(("cuda", n)) => n.parse().map(Some).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// A run's solver state on its backend.
enum Target {
    Cpu(SolverRun<'static, CpuBackend>),
    Cuda {
        backend: &'static CudaBackend,
        ordinal: usize,
        run: SolverRun<'static, CudaBackend>,
    },
}

/// One run of a plan on samples of one shape and dtype: the solver's history,
/// allocated once, on the CPU or a CUDA device.
#[pyclass(module = "diffinv")]
struct Run {
    /// Borrows `_plan` (declared after it so dropped first).
    target: Target,
    _plan: Py<Plan>,
    shape: Vec<usize>,
    dtype: DType,
}

fn dtype_named(name: &str) -> PyResult<DType> {
    match name {
        "float16" => Ok(DType::F16),
        "float32" => Ok(DType::F32),
        "float64" => Ok(DType::F64),
        other => Err(PyTypeError::new_err(format!(
            "dtype {other:?}: expected \"float16\", \"float32\" or \"float64\""
        ))),
    }
}

#[pymethods]
impl Run {
    /// A run of `plan` for samples of `shape` (1 to 5 dimensions) and `dtype`
    /// ("float16", "float32", "float64"; CUDA: not float64) on `device`
    /// ("cpu", "cuda" or "cuda:N"); `seed` keys DDIM's in-kernel noise.
    #[new]
    #[pyo3(signature = (plan, shape, dtype = "float32", seed = 0, device = "cpu"))]
    fn new(
        plan: Py<Plan>,
        shape: Vec<usize>,
        dtype: &str,
        seed: u64,
        device: &str,
    ) -> PyResult<Self> {
        let dtype = dtype_named(dtype)?;
        let core_shape = Shape::from_dims(&shape).map_err(to_py)?;
        // SAFETY: `Plan` is frozen (never mutated) and `_plan` keeps the Python
        // object — and so this borrow of its contents — alive until after
        // `run` is dropped (field order).
        let plan_ref: &'static CorePlan = unsafe { &*std::ptr::addr_of!(plan.get().plan) };
        let options = SamplerOptions {
            seed,
            check_finite: false,
        };
        let target = match device_ordinal(device)? {
            None => Target::Cpu(
                SolverRun::new(backend(), plan_ref, core_shape, dtype, options).map_err(to_py)?,
            ),
            Some(ordinal) => {
                let backend = cuda_backend(ordinal)?;
                let run =
                    SolverRun::new(backend, plan_ref, core_shape, dtype, options).map_err(to_py)?;
                Target::Cuda {
                    backend,
                    ordinal,
                    run,
                }
            }
        };
        Ok(Run {
            target,
            _plan: plan,
            shape,
            dtype,
        })
    }

    /// Apply step `k` in place: `x` becomes the next sample, given the
    /// network's output `model_out` for it (same shape and dtype as the run,
    /// C-contiguous arrays on the run's device). No data is copied; on CUDA
    /// the step has finished when this returns.
    fn step(
        &mut self,
        k: usize,
        x: &Bound<'_, PyAny>,
        model_out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let place = match &self.target {
            Target::Cpu(_) => Place::Cpu,
            Target::Cuda {
                backend, ordinal, ..
            } => Place::Cuda {
                ordinal: *ordinal,
                stream: backend.device().stream().cu_stream() as usize,
            },
        };
        let xb = borrow(x, "x", place)?;
        let mb = borrow(model_out, "model_out", place)?;
        for (what, b) in [("x", &xb), ("model_out", &mb)] {
            if b.shape != self.shape {
                return Err(PyValueError::new_err(format!(
                    "{what}: shape {:?}, the run's is {:?}",
                    b.shape, self.shape
                )));
            }
            if b.dtype != self.dtype {
                return Err(PyTypeError::new_err(format!(
                    "{what}: dtype {:?}, the run's is {:?}",
                    b.dtype, self.dtype
                )));
            }
        }
        let n: usize = self.shape.iter().product();
        let bytes = n * self.dtype.size();
        let (xa, ma) = (xb.data as usize, mb.data as usize);
        if xa < ma + bytes && ma < xa + bytes {
            return Err(PyValueError::new_err(
                "model_out shares memory with x (the step writes x while reading model_out)",
            ));
        }
        for (what, a) in [("x", xa), ("model_out", ma)] {
            if a % self.dtype.size() != 0 {
                return Err(PyValueError::new_err(format!(
                    "{what}: data at {a:#x} is not aligned to its {}-byte elements",
                    self.dtype.size()
                )));
            }
        }
        let shape = Shape::from_dims(&self.shape).map_err(to_py)?;
        match &mut self.target {
            Target::Cpu(run) => {
                // SAFETY: both arrays are live (their capsules are held until
                // the end of this call), C-contiguous, of `n` elements of the
                // run's dtype, aligned and disjoint (checked); the GIL is held,
                // so Python code cannot touch them during the step.
                let (xbuf, mbuf) = unsafe {
                    (
                        CpuBuffer::from_raw_parts(xb.data.cast(), n, self.dtype).map_err(to_py)?,
                        CpuBuffer::from_raw_parts(mb.data.cast(), n, self.dtype).map_err(to_py)?,
                    )
                };
                let mut xt = Tensor::from_buffer(xbuf, shape).map_err(to_py)?;
                let mt = Tensor::from_buffer(mbuf, shape).map_err(to_py)?;
                run.step_with(backend(), k, &mut xt, &mt).map_err(to_py)
            }
            Target::Cuda { backend, run, .. } => {
                // SAFETY: both arrays are live device memory of the run's
                // device (checked, capsules held until the end of this call),
                // C-contiguous, `n` elements of the run's dtype, disjoint;
                // their producer ordered its writes before our stream
                // (`__dlpack__(stream=…)`), and the synchronize below ends our
                // use before the capsules are released.
                let (xbuf, mbuf) = unsafe {
                    (
                        backend
                            .wrap_device_ptr(xb.data as u64, n, self.dtype)
                            .map_err(to_py)?,
                        backend
                            .wrap_device_ptr(mb.data as u64, n, self.dtype)
                            .map_err(to_py)?,
                    )
                };
                let mut xt = Tensor::from_buffer(xbuf, shape).map_err(to_py)?;
                let mt = Tensor::from_buffer(mbuf, shape).map_err(to_py)?;
                run.step_with(*backend, k, &mut xt, &mt).map_err(to_py)?;
                backend.synchronize().map_err(to_py)
            }
        }
    }
}

#[pymodule]
fn diffinv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Plan>()?;
    m.add_class::<Run>()?;
    Ok(())
}
