//! Tensors over memory the caller owns (`docs/embedding.md`): a sampling loop
//! whose sample and model output live in the caller's memory — slices on the
//! CPU, buffers of a wgpu device the test opens itself, allocations made
//! through the CUDA emulator — ends bit-identical to the same loop on
//! crate-owned tensors of the same backend, with the result in the caller's
//! memory; misuse (too short, wrong usages, null, misaligned) is a typed error.

mod common;

use diffinv::backend::cpu::{self, CpuBackend, CpuBuffer};
use diffinv::{
    DType, Error, HostSlice, NoiseSchedule, Plan, PlanConfig, SamplerOptions, Shape, Solver,
    SolverOps, SolverRun, Tensor,
};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// An odd element count (105), so f16 data ends inside a 4-byte word.
const SHAPE: [usize; 4] = [1, 3, 5, 7];

fn shape() -> Shape {
    Shape::from_dims(&SHAPE).unwrap()
}

fn n() -> usize {
    shape().checked_len().unwrap()
}

fn plans() -> Vec<Plan> {
    let schedule = NoiseSchedule::ddpm_linear();
    [Solver::DPMPP_3M, Solver::UniPc, Solver::Ddim { eta: 0.5 }]
        .into_iter()
        .map(|solver| {
            let config = PlanConfig {
                solver,
                steps: 6,
                ..PlanConfig::default()
            };
            Plan::new(&schedule, &config).unwrap()
        })
        .collect()
}

const OPTIONS: SamplerOptions = SamplerOptions {
    seed: 11,
    check_finite: false,
};

/// The caller's "network": a fixed function of x, computed on the host.
fn net(x: &[f32]) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| 0.6 * v + 0.05 * ((i % 13) as f32 - 6.0))
        .collect()
}

fn x0() -> Vec<f32> {
    common::values(5, n(), 1.5)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// Host values in the storage bytes of `dtype` (f16 through the same F16C
/// conversion the crate uses, so both sides round alike).
fn storage_bytes(dtype: DType, v: &[f32]) -> Vec<u8> {
    HostSlice::F32(v).storage_bytes(dtype).unwrap().into_owned()
}

fn from_storage_bytes(dtype: DType, b: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F16 => {
            let h: Vec<f16> = bytemuck::pod_collect_to_vec(b);
            let mut out = vec![0.0; h.len()];
            h.convert_to_f32_slice(&mut out);
            out
        }
        DType::F32 => bytemuck::pod_collect_to_vec(b),
        other => panic!("no host conversion for {other:?}"),
    }
}

/// The reference: the loop on tensors the backend allocated.
fn owned_loop<B: SolverOps>(backend: &B, plan: &Plan, dtype: DType) -> Vec<f32> {
    let mut x = Tensor::from_host(backend, shape(), dtype, HostSlice::F32(&x0())).unwrap();
    let mut run = SolverRun::new(backend, plan, shape(), dtype, OPTIONS).unwrap();
    for k in 0..plan.len() {
        let eps = net(&x.to_f32(backend).unwrap());
        run.model_out_mut()
            .upload(backend, HostSlice::F32(&eps))
            .unwrap();
        run.step(backend, k, &mut x).unwrap();
    }
    x.to_f32(backend).unwrap()
}

/// The same loop with `x` and the model output over the caller's memory; the
/// caller writes each model output into its own memory (`write_eps`).
fn external_loop<B: SolverOps>(
    backend: &B,
    plan: &Plan,
    x: &mut Tensor<B>,
    eps: &Tensor<B>,
    mut write_eps: impl FnMut(&[f32]),
) {
    let mut run = SolverRun::new(backend, plan, shape(), x.dtype(), OPTIONS).unwrap();
    for k in 0..plan.len() {
        let e = net(&x.to_f32(backend).unwrap());
        write_eps(&e);
        run.step_with(backend, k, x, eps).unwrap();
    }
    backend.synchronize().unwrap();
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().zip(x0()).any(|(g, x)| *g != x),
        "{what}: the loop left x as it was"
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// The caller keeps its own slices and computes the model output straight
/// into one; each step borrows both for one fused update.
fn cpu_loop<T: cpu::HostElement>(
    backend: &CpuBackend,
    plan: &Plan,
    x: &mut [T],
    to_f32: impl Fn(&[T]) -> Vec<f32>,
    from_f32: impl Fn(&[f32], &mut [T]),
) {
    let dtype = <T as cpu::HostElement>::DTYPE;
    let mut run = SolverRun::new(backend, plan, shape(), dtype, OPTIONS).unwrap();
    let mut eps = x.to_vec();
    for k in 0..plan.len() {
        from_f32(&net(&to_f32(x)), &mut eps);
        cpu::scope(|s| {
            let xt = s.tensor(&mut *x, shape())?;
            let et = s.tensor(&mut eps, shape())?;
            run.step_with(backend, k, xt, et)
        })
        .unwrap();
    }
}

#[test]
fn cpu_slices_match_owned_tensors() {
    let backend = CpuBackend::new();
    for plan in plans() {
        let mut x16 = vec![f16::ZERO; n()];
        x16.convert_from_f32_slice(&x0());
        let before = x16.as_ptr();
        cpu_loop(
            &backend,
            &plan,
            &mut x16,
            |h| {
                let mut v = vec![0.0; h.len()];
                h.convert_to_f32_slice(&mut v);
                v
            },
            |v, h| h.convert_from_f32_slice(v),
        );
        assert_eq!(x16.as_ptr(), before);
        let got: Vec<f32> = x16.iter().map(|h| h.to_f32()).collect();
        assert_bits("cpu f16", &got, &owned_loop(&backend, &plan, DType::F16));

        let mut x32 = x0();
        cpu_loop(
            &backend,
            &plan,
            &mut x32,
            |v| v.to_vec(),
            |v, out| out.copy_from_slice(v),
        );
        assert_bits("cpu f32", &x32, &owned_loop(&backend, &plan, DType::F32));
    }
}

#[test]
fn cpu_misuse_is_typed() {
    let backend = CpuBackend::new();
    let mut short = vec![0.0f32; n() - 1];
    let err = cpu::scope(|s| s.tensor(&mut short, shape()).map(|_| ())).unwrap_err();
    assert!(
        matches!(err, Error::LengthMismatch { expected, got, .. } if expected == n() && got == n() - 1),
        "{err}"
    );
    // SAFETY: a null pointer is rejected before anything is dereferenced.
    let err =
        unsafe { CpuBuffer::from_raw_parts(std::ptr::null_mut(), 4, DType::F32) }.unwrap_err();
    assert!(matches!(err, Error::NullPointer { .. }), "{err}");
    let mut ints = vec![0u32; 4];
    // SAFETY: rejected for its dtype before use; the pointer is valid anyway.
    let err =
        unsafe { CpuBuffer::from_raw_parts(ints.as_mut_ptr().cast(), 4, DType::U32) }.unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { .. }), "{err}");

    // A model output of another shape; and a clone that owns its data.
    let plan = &plans()[0];
    let mut run = SolverRun::new(&backend, plan, shape(), DType::F32, OPTIONS).unwrap();
    let (mut x, mut eps) = (x0(), vec![0.0f32; n() + 1]);
    cpu::scope(|s| {
        let xt = s.tensor(&mut x, shape())?;
        let et = s.tensor(&mut eps, Shape::flat(n() + 1))?;
        let err = run.step_with(&backend, 0, xt, et).unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
        let copy = xt.buffer().clone();
        assert!(xt.buffer().is_external() && !copy.is_external());
        diffinv::Result::Ok(())
    })
    .unwrap();
    assert_eq!(x, x0(), "a failed step writes nothing");
}

#[cfg(feature = "wgpu")]
mod wgpu_external {
    use super::*;
    use diffinv::backend::wgpu::{WgpuBackend, WgpuOptions};

    /// A device and queue opened by the test itself, as a renderer would.
    fn caller_device() -> Option<(wgpu::Device, wgpu::Queue)> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let Some(adapter) = adapters.into_iter().next() else {
            common::skip("wgpu", "no adapter for the caller's device");
            return None;
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("caller"),
            required_features: adapter.features() & wgpu::Features::SHADER_F16,
            required_limits: adapter.limits(),
            ..Default::default()
        };
        match pollster::block_on(adapter.request_device(&desc)) {
            Ok(dq) => Some(dq),
            Err(e) => {
                common::skip("wgpu", e);
                None
            }
        }
    }

    fn caller_buffer(device: &wgpu::Device, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("caller buffer"),
            size: bytes,
            usage,
            mapped_at_creation: false,
        })
    }

    /// The caller's own read of its buffer (copy to a mappable buffer).
    fn caller_read(device: &wgpu::Device, queue: &wgpu::Queue, buf: &wgpu::Buffer) -> Vec<u8> {
        let staging = caller_buffer(
            device,
            buf.size(),
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
        queue.submit([enc.finish()]);
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.unwrap());
        device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
        let bytes = staging.slice(..).get_mapped_range().unwrap().to_vec();
        bytes
    }

    const USAGE: wgpu::BufferUsages = diffinv::backend::wgpu::REQUIRED_USAGES;

    fn bytes_for(dtype: DType) -> u64 {
        ((n() * dtype.size()).div_ceil(4) * 4) as u64
    }

    #[test]
    fn caller_device_and_buffers_match_owned_tensors() {
        let Some((device, queue)) = caller_device() else {
            return;
        };
        let _serial = common::serial();
        let mut variants = vec![true];
        if device.features().contains(wgpu::Features::SHADER_F16) {
            variants.push(false);
        }
        for force_packed_f16 in variants {
            let options = WgpuOptions {
                force_packed_f16,
                allow_software: true,
            };
            let backend = WgpuBackend::from_device(device.clone(), queue.clone(), options);
            for plan in plans() {
                for dtype in [DType::F16, DType::F32] {
                    let size = bytes_for(dtype);
                    let xb = caller_buffer(&device, size, USAGE);
                    let eb = caller_buffer(&device, size, USAGE);
                    let mut init = storage_bytes(dtype, &x0());
                    init.resize(size as usize, 0);
                    queue.write_buffer(&xb, 0, &init);
                    let mut x = Tensor::<WgpuBackend>::from_buffer(
                        backend.wrap_buffer(&xb, n(), dtype).unwrap(),
                        shape(),
                    )
                    .unwrap();
                    let eps = Tensor::<WgpuBackend>::from_buffer(
                        backend.wrap_buffer(&eb, n(), dtype).unwrap(),
                        shape(),
                    )
                    .unwrap();
                    external_loop(&backend, &plan, &mut x, &eps, |e| {
                        // The caller's write: after our recorded work (flush),
                        // before the next submission.
                        backend.flush().unwrap();
                        let mut b = storage_bytes(dtype, e);
                        b.resize(size as usize, 0);
                        queue.write_buffer(&eb, 0, &b);
                    });
                    let mine = caller_read(&device, &queue, &xb);
                    let got = from_storage_bytes(dtype, &mine[..n() * dtype.size()]);
                    let want = owned_loop(&backend, &plan, dtype);
                    let what = format!("wgpu {dtype:?} packed={force_packed_f16}");
                    assert_bits(&what, &got, &want);
                }
            }
        }
    }

    #[test]
    fn wrong_usage_or_size_is_typed() {
        let Some((device, queue)) = caller_device() else {
            return;
        };
        let backend = WgpuBackend::from_device(device.clone(), queue, WgpuOptions::default());
        let no_storage = caller_buffer(
            &device,
            bytes_for(DType::F32),
            wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        );
        let err = backend
            .wrap_buffer(&no_storage, n(), DType::F32)
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::MissingBufferUsage { missing, .. } if missing.contains("STORAGE")),
            "{err}"
        );
        let no_copy = caller_buffer(&device, bytes_for(DType::F32), wgpu::BufferUsages::STORAGE);
        let err = backend
            .wrap_buffer(&no_copy, n(), DType::F32)
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::MissingBufferUsage { missing, .. }
                if missing.contains("COPY_SRC") && missing.contains("COPY_DST")),
            "{err}"
        );
        // 105 f16 need 212 bytes (rounded to a word): 208 is short.
        let short = caller_buffer(&device, 208, USAGE);
        let err = backend.wrap_buffer(&short, n(), DType::F16).err().unwrap();
        assert!(
            matches!(
                err,
                Error::BufferTooSmall {
                    expected: 212,
                    got: 208,
                    ..
                }
            ),
            "{err}"
        );
        let ok = caller_buffer(&device, bytes_for(DType::F32), USAGE);
        let err = backend.wrap_buffer(&ok, n(), DType::F64).err().unwrap();
        assert!(matches!(err, Error::UnsupportedDType { .. }), "{err}");
        // A buffer wrapped for fewer elements than the tensor's shape.
        let buf = backend.wrap_buffer(&ok, n() - 1, DType::F32).unwrap();
        let err = Tensor::<WgpuBackend>::from_buffer(buf, shape())
            .err()
            .unwrap();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    }
}

#[cfg(feature = "cuda")]
mod cuda_external {
    use super::*;
    use common::cuda_emu::EmuDevice;
    use diffinv::backend::cuda::{CudaBackend, CudaDevice};
    use diffinv::Backend;

    type Emu = CudaBackend<EmuDevice>;

    #[test]
    fn emulator_allocations_match_owned_tensors() {
        let Some(backend) = common::cuda_emu::new_cuda_emu() else {
            return;
        };
        let dev = backend.device();
        for plan in plans() {
            for dtype in [DType::F16, DType::F32] {
                let bytes = n() * dtype.size();
                // The caller's memory, allocated through the emulated device
                // (aligned, with a red zone that every launch checks).
                let mut xm = dev.alloc_zeroed(bytes).unwrap();
                let mut em = dev.alloc_zeroed(bytes).unwrap();
                dev.write(&mut xm, 0, &storage_bytes(dtype, &x0())).unwrap();
                let (xp, ep) = (dev.device_ptr(&xm), dev.device_ptr(&em));
                // SAFETY: both allocations hold n elements of dtype and outlive
                // the tensors (dropped at the end of this iteration, before them);
                // the emulated device runs everything in order.
                let (xbuf, ebuf) = unsafe {
                    (
                        backend.wrap_device_ptr(xp, n(), dtype).unwrap(),
                        backend.wrap_device_ptr(ep, n(), dtype).unwrap(),
                    )
                };
                let mut x = Tensor::<Emu>::from_buffer(xbuf, shape()).unwrap();
                let eps = Tensor::<Emu>::from_buffer(ebuf, shape()).unwrap();
                external_loop(&backend, &plan, &mut x, &eps, |e| {
                    dev.write(&mut em, 0, &storage_bytes(dtype, e)).unwrap();
                });
                drop((x, eps));
                let mut mine = vec![0u8; bytes];
                dev.read(&xm, 0, &mut mine).unwrap();
                let got = from_storage_bytes(dtype, &mine);
                let want = owned_loop(&backend, &plan, dtype);
                assert_bits(&format!("cuda-emu {dtype:?}"), &got, &want);
            }
        }
    }

    #[test]
    fn null_misaligned_or_unsupported_is_typed() {
        let Some(backend) = common::cuda_emu::new_cuda_emu() else {
            return;
        };
        let mem = backend.device().alloc_zeroed(64).unwrap();
        let p = backend.device().device_ptr(&mem);
        // SAFETY: every call below is rejected before the address is used.
        unsafe {
            let err = backend.wrap_device_ptr(0, 8, DType::F16).err().unwrap();
            assert!(matches!(err, Error::NullPointer { .. }), "{err}");
            let err = backend.wrap_device_ptr(p + 2, 8, DType::F16).err().unwrap();
            assert!(matches!(err, Error::Misaligned { align: 4, .. }), "{err}");
            let err = backend.wrap_device_ptr(p, 8, DType::F64).err().unwrap();
            assert!(matches!(err, Error::UnsupportedDType { .. }), "{err}");
        }
        // SAFETY: 64 bytes hold 16 f32; `mem` outlives the buffer.
        let buf = unsafe { backend.wrap_device_ptr(p, 16, DType::F32) }.unwrap();
        let err = Tensor::<Emu>::from_buffer(buf, Shape::flat(17))
            .err()
            .unwrap();
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
        assert_eq!(backend.launch_count(), 0);
    }
}

/// Run in a child process by `a_buffer_escaping_its_scope_aborts`: swaps a
/// scope tensor with an owned one, so the borrowed buffer would outlive the
/// slice. Does nothing unless the parent asked for it.
#[test]
fn escape_child() {
    if std::env::var_os("DIFFINV_ESCAPE_CHILD").is_none() {
        return;
    }
    let backend = CpuBackend::new();
    let mut outside = Tensor::zeros(&backend, Shape::flat(4), DType::F32).unwrap();
    let mut data = vec![1.0f32; 4];
    cpu::scope(|s| {
        let t = s.tensor(&mut data, Shape::flat(4)).unwrap();
        std::mem::swap(t, &mut outside);
    });
    // Unreachable: the scope aborts. If it returned, `outside` would now
    // borrow `data` past the scope.
    println!("scope returned");
}

#[test]
fn a_buffer_escaping_its_scope_aborts() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "escape_child", "--nocapture", "--test-threads=1"])
        .env("DIFFINV_ESCAPE_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child returned: {stdout}");
    assert!(
        stderr.contains("escaped its cpu::scope") && !stdout.contains("scope returned"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
