"""Replay of diffusers' scheduler fixtures (tests/fixtures/sched) through the
Python API, on numpy arrays passed by DLPack: every configuration's timesteps,
and every step teacher-forced (stored x[k] and eps[k] in, x[k+1] compared, in
float64, the tolerance of tests/sched_fixtures.rs). Also: the kernel writes the
caller's array in place (no copy), bad arrays raise ValueError/TypeError with
the reason, CUDA arrays are refused by a CPU run before they are exported, and
a CUDA run without a device raises RuntimeError with the driver's reason.
numpy only."""

import ctypes
import json
import pathlib

import numpy as np
import pytest

import diffinv

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "sched"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
DTYPES = {"F64": np.float64, "F32": np.float32, "I64": np.int64}


def load_safetensors(path):
    """The tensors of a safetensors file as read-only numpy arrays."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = data[base + start : base + end]
        out[key] = np.frombuffer(raw, dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out


STOCK = load_safetensors(FIXTURES / "schedulers.safetensors")
SHAPE = tuple(MANIFEST["shape"])


def plan_for(config):
    """The diffusers scheduler class and config of a fixture, as a Plan."""
    cfg = config["scheduler_config"]
    scheduler = config["scheduler"]
    kwargs = dict(
        steps=config["num_inference_steps"],
        beta_schedule=cfg["beta_schedule"],
        beta_start=cfg["beta_start"],
        beta_end=cfg["beta_end"],
        train_steps=cfg["num_train_timesteps"],
        timestep_spacing=cfg["timestep_spacing"],
        steps_offset=cfg.get("steps_offset", 0),
        final_sigma=cfg.get("final_sigmas_type") or "zero",
        prediction=cfg["prediction_type"],
    )
    assert not cfg.get("use_karras_sigmas") and not cfg.get("use_lu_lambdas")
    if scheduler == "DDIMScheduler":
        assert not cfg["clip_sample"] and cfg["set_alpha_to_one"]
        return diffinv.Plan(solver="ddim", eta=config["step_kwargs"].get("eta", 0.0), **kwargs)
    if scheduler == "DPMSolverMultistepScheduler":
        assert cfg["algorithm_type"] == "dpmsolver++" and not cfg["thresholding"]
        return diffinv.Plan(
            solver="dpmpp",
            order=cfg["solver_order"],
            heun=cfg["solver_type"] == "heun",
            lower_order_final=cfg["lower_order_final"],
            euler_at_final=cfg["euler_at_final"],
            **kwargs,
        )
    if scheduler == "UniPCMultistepScheduler":
        assert cfg["solver_type"] == "bh2" and cfg["solver_order"] == 2 and cfg["predict_x0"]
        return diffinv.Plan(solver="unipc", **kwargs)
    raise AssertionError(f"no mapping for {scheduler}")


CONFIGS = MANIFEST["configs"]


def test_manifest_has_every_family():
    names = [c["name"] for c in CONFIGS]
    assert len(names) >= 54
    for family in ["dpmpp2m_midpoint", "dpmpp2m_heun", "dpmpp3m_midpoint", "ddim_eta0", "unipc_bh2"]:
        assert any(n.startswith(family) for n in names), family


@pytest.mark.parametrize("config", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_timesteps_match_diffusers(config):
    plan = plan_for(config)
    assert len(plan) == config["num_inference_steps"]
    assert plan.timesteps == [float(t) for t in config["timesteps"]]


@pytest.mark.parametrize("config", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_teacher_forced_steps_match_stock_diffusers(config):
    plan = plan_for(config)
    xs = STOCK[config["keys"]["x"]]
    eps = STOCK[config["keys"]["eps"]]
    run = diffinv.Run(plan, list(SHAPE), dtype="float64")
    worst = 0.0
    for k in range(len(plan)):
        x = np.array(xs[k])  # the caller's own writable, contiguous array
        address = x.__array_interface__["data"][0]
        run.step(k, x, np.array(eps[k]))
        # No copy: the step wrote the caller's memory, which still is where it was.
        assert x.__array_interface__["data"][0] == address
        assert not np.array_equal(x, xs[k])
        worst = max(worst, float(np.max(np.abs(x - xs[k + 1]))))
    # Stock diffusers steps in float32 (<= 1.5e-6 observed against an f64 implementation).
    assert worst <= 5e-6, f"{config['name']}: teacher-forced max abs {worst:.3e}"


def small_run(dtype="float32"):
    return diffinv.Run(diffinv.Plan(steps=4), [1, 3, 4, 4], dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_float_dtype_is_written_in_place(dtype):
    run = small_run(np.dtype(dtype).name)
    x = np.linspace(-1, 1, 48, dtype=dtype).reshape(1, 3, 4, 4)
    before = x.copy()
    address = x.ctypes.data
    run.step(0, x, np.full_like(x, 0.25))
    assert x.ctypes.data == address
    assert not np.array_equal(x, before)


def test_non_contiguous_array_is_a_value_error():
    run = small_run()
    wide = np.zeros((1, 3, 4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="not C-contiguous"):
        run.step(0, wide[..., ::2], np.zeros((1, 3, 4, 4), dtype=np.float32))


def test_wrong_dtype_is_a_type_error():
    run = small_run()
    with pytest.raises(TypeError, match="not float16, float32 or float64"):
        run.step(0, np.zeros((1, 3, 4, 4), dtype=np.int32), np.zeros((1, 3, 4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="the run's is F32"):
        run.step(0, np.zeros((1, 3, 4, 4), dtype=np.float64), np.zeros((1, 3, 4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="__dlpack__"):
        run.step(0, [0.0] * 48, np.zeros((1, 3, 4, 4), dtype=np.float32))


def test_wrong_shape_aliasing_or_step_is_a_value_error():
    run = small_run()
    x = np.zeros((1, 3, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        run.step(0, x, np.zeros((1, 3, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="shares memory"):
        run.step(0, x, x)
    with pytest.raises(ValueError, match="out of range"):
        run.step(4, x, np.zeros_like(x))
    with pytest.raises(ValueError, match="solver"):
        diffinv.Plan(steps=4, solver="euler")
    with pytest.raises(ValueError, match="steps"):
        diffinv.Plan(steps=0)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class LegacyCudaArray:
    """A DLPack producer whose capsule claims a CUDA device (numpy cannot make
    one), without __dlpack_device__: only the capsule says where it lives."""

    def __init__(self):
        self.shape = (ctypes.c_int64 * 4)(1, 3, 4, 4)
        self.managed = _DLManagedTensor()
        t = self.managed.dl_tensor
        t.data = 0x1000
        t.device = _DLDevice(2, 0)
        t.ndim = 4
        t.dtype = _DLDataType(2, 32, 1)
        t.shape = self.shape
        self.exports = []

    def __dlpack__(self, stream=None):
        self.exports.append(stream)
        new = ctypes.pythonapi.PyCapsule_New
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self.managed), b"dltensor", None)


class CudaArray(LegacyCudaArray):
    """The same producer with the protocol's __dlpack_device__."""

    def __dlpack_device__(self):
        return (2, 0)


def test_cuda_array_is_refused_by_a_cpu_run_before_export():
    run = small_run()
    array = CudaArray()
    want = r'on cuda \(device 0\); this Run is on cpu \(a Run made with device="cuda:0" takes it\)'
    with pytest.raises(ValueError, match=want):
        run.step(0, array, np.zeros((1, 3, 4, 4), dtype=np.float32))
    # Refused on __dlpack_device__: the producer was never asked to export.
    assert array.exports == []


def test_cuda_capsule_without_dlpack_device_is_refused_after_export():
    run = small_run()
    array = LegacyCudaArray()
    with pytest.raises(ValueError, match=r"on cuda \(device 0\); this Run is on cpu"):
        run.step(0, array, np.zeros((1, 3, 4, 4), dtype=np.float32))
    # A CPU run asks for the capsule without a stream.
    assert array.exports == [None]


def test_cuda_run_opens_or_names_the_reason():
    try:
        run = diffinv.Run(diffinv.Plan(steps=4), [1, 3, 4, 4], device="cuda:0")
    except RuntimeError as e:
        # No driver or device here: the device and the driver's reason.
        assert 'device "cuda:0"' in str(e) and "unavailable" in str(e), str(e)
        return
    # A machine with a GPU: a numpy array is refused before export.
    with pytest.raises(ValueError, match="on cpu .*this Run is on cuda:0"):
        run.step(0, np.zeros((1, 3, 4, 4), dtype=np.float32), np.zeros((1, 3, 4, 4), dtype=np.float32))


@pytest.mark.parametrize("device", ["tpu", "cuda:", "cuda:x", "cpu:0"])
def test_unknown_device_is_a_value_error(device):
    with pytest.raises(ValueError, match="device"):
        diffinv.Run(diffinv.Plan(steps=4), [1, 3, 4, 4], device=device)
