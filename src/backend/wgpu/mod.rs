//! The wgpu backend: WGSL from `shaders/` on Vulkan, Metal or DX12 — and on
//! lavapipe (Mesa's CPU Vulkan), which is how shaders run where there is no GPU.
//!
//! One device and queue; pipelines compiled once per (kernel, storage variant,
//! workgroup size) and cached. f16 tensors use `array<f16>` when the adapter
//! offers SHADER_F16 and a packed-u32 variant otherwise (or when forced, so
//! both are tested on one machine).

mod variants;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use half::f16;
use half::slice::HalfFloatSliceExt;
use wgpu::util::DeviceExt;

use super::params::SolverStepParams;
use super::{check_raw_step, Backend, BackendKind, RawBuffer};
use crate::error::{Error, Result};
use crate::solver::{SolverStep, StepLaunch};
use crate::tensor::{DType, HostSlice, HostVec};
use variants::assemble;
pub use variants::ShaderVariant;

/// Most workgroups one dispatch dimension may have (WebGPU's default limit);
/// kernels loop grid-stride over anything larger.
const MAX_WORKGROUPS: u32 = 65_535;

const SOLVER_WGSL: &str = include_str!("../../../shaders/solver.wgsl");
const SOLVER_PACKED_WGSL: &str = include_str!("../../../shaders/solver_packed.wgsl");

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
    fn describe(&self, what: &'static str) -> RawBuffer {
        RawBuffer {
            what,
            dtype: self.dtype,
            len: self.len,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kernel {
    SolverStep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: Kernel,
    variant: ShaderVariant,
    workgroup_size: u32,
}

/// The wgpu backend.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    native_f16: bool,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    params: wgpu::Buffer,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Serialises "write params, encode, submit": the params buffer is shared.
    submit: Mutex<()>,
    /// Errors wgpu reports outside an error scope (instead of its default panic).
    uncaptured: Arc<Mutex<Option<String>>>,
    launches: AtomicU64,
    workgroup_size: u32,
    max_workgroups: u32,
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

impl WgpuBackend {
    /// Open the best adapter with default options (software adapters allowed).
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions::default())
    }

    /// Open the best adapter: hardware first, a software adapter only if allowed.
    pub fn with_options(options: WgpuOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        adapters.retain(|a| {
            let info = a.get_info();
            let software = info.device_type == wgpu::DeviceType::Cpu;
            options.allow_software || !software
        });
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

        let uncaptured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));

        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("diffinv solver step"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1, false),
                storage(2, true),
                storage(3, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("diffinv solver step"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("diffinv params"),
            contents: bytemuck::bytes_of(&<SolverStepParams as bytemuck::Zeroable>::zeroed()),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
        let max_workgroups = MAX_WORKGROUPS.min(limits.max_compute_workgroups_per_dimension);
        Ok(WgpuBackend {
            device,
            queue,
            info,
            native_f16,
            layout,
            pipeline_layout,
            params,
            pipelines: Mutex::new(HashMap::new()),
            submit: Mutex::new(()),
            uncaptured,
            launches: AtomicU64::new(0),
            workgroup_size: 256,
            max_workgroups,
        })
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

    /// Largest buffer `alloc` accepts, in bytes: the device's storage-binding
    /// and buffer-size limits (the adapter's own, not WebGPU's 128 MiB default).
    pub fn max_buffer_bytes(&self) -> u64 {
        let limits = self.device.limits();
        limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
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

    fn variant(&self, dtype: DType) -> Result<ShaderVariant> {
        match dtype {
            DType::F32 => Ok(ShaderVariant::F32),
            DType::F16 if self.native_f16 => Ok(ShaderVariant::F16Native),
            DType::F16 => Ok(ShaderVariant::F16Packed),
            DType::F64 => Err(Error::UnsupportedDType {
                backend: "wgpu",
                dtype,
            }),
        }
    }

    fn pipeline(&self, key: PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| device_error("pipeline cache poisoned"))?;
        if let Some(p) = cache.get(&key) {
            return Ok(Arc::clone(p));
        }
        let source = match key.kernel {
            Kernel::SolverStep => {
                assemble(key.variant, SOLVER_WGSL, SOLVER_PACKED_WGSL).map_err(device_error)?
            }
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("diffinv solver step"),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("diffinv solver step"),
                layout: Some(&self.pipeline_layout),
                module: &module,
                entry_point: Some("solver_step"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("WORKGROUP_SIZE", f64::from(key.workgroup_size))],
                    ..Default::default()
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(device_error(format!(
                "creating the {:?} pipeline: {e}",
                key.variant
            )));
        }
        let pipeline = Arc::new(pipeline);
        cache.insert(key, Arc::clone(&pipeline));
        Ok(pipeline)
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

    fn check_buffer(buf: &WgpuBuffer, dtype: DType) -> Result<()> {
        buf.describe("wgpu buffer").check(dtype, 0)
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
        self.variant(dtype)?;
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

    fn write(&self, buf: &mut WgpuBuffer, dtype: DType, data: HostSlice<'_>) -> Result<()> {
        Self::check_buffer(buf, dtype)?;
        if data.len() != buf.len {
            return Err(Error::LengthMismatch {
                what: "wgpu write",
                expected: buf.len,
                got: data.len(),
            });
        }
        let mut bytes = match (dtype, data) {
            (DType::F32, HostSlice::F32(s)) => bytemuck::cast_slice(s).to_vec(),
            (DType::F32, HostSlice::F16(s)) => {
                let mut v = vec![0f32; s.len()];
                s.convert_to_f32_slice(&mut v);
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F32, HostSlice::F64(s)) => {
                let v: Vec<f32> = s.iter().map(|&x| x as f32).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F16, HostSlice::F16(s)) => bytemuck::cast_slice(s).to_vec(),
            (DType::F16, HostSlice::F32(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f32_slice(s);
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F16, HostSlice::F64(s)) => {
                let mut v = vec![f16::ZERO; s.len()];
                v.convert_from_f64_slice(s);
                bytemuck::cast_slice(&v).to_vec()
            }
            (DType::F64, _) => {
                return Err(Error::UnsupportedDType {
                    backend: "wgpu",
                    dtype,
                })
            }
        };
        // Copies must be a multiple of 4 bytes; the buffer was allocated with that padding.
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        self.queue.write_buffer(&buf.buffer, 0, &bytes);
        Ok(())
    }

    fn read(&self, buf: &WgpuBuffer, dtype: DType, len: usize) -> Result<HostVec> {
        Self::check_buffer(buf, dtype)?;
        if len > buf.len {
            return Err(Error::LengthMismatch {
                what: "wgpu read",
                expected: buf.len,
                got: len,
            });
        }
        let size = byte_size(len, dtype);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("diffinv readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&buf.buffer, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| device_error("readback callback never ran"))?
            .map_err(|e| device_error(format!("mapping the readback buffer: {e}")))?;
        let out = {
            let mapped = slice
                .get_mapped_range()
                .map_err(|e| device_error(format!("reading the readback buffer: {e}")))?;
            let bytes = &mapped[..len * dtype.size()];
            match dtype {
                DType::F32 => HostVec::F32(bytemuck::pod_collect_to_vec(bytes)),
                DType::F16 => HostVec::F16(bytemuck::pod_collect_to_vec(bytes)),
                DType::F64 => {
                    return Err(Error::UnsupportedDType {
                        backend: "wgpu",
                        dtype,
                    })
                }
            }
        };
        staging.unmap();
        Ok(out)
    }

    fn synchronize(&self) -> Result<()> {
        self.wait()
    }

    fn launch_count(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    fn solver_step_raw(
        &self,
        step: &SolverStep,
        launch: StepLaunch,
        dtype: DType,
        n: usize,
        stride: usize,
        x: &mut WgpuBuffer,
        model_out: &WgpuBuffer,
        state: &mut WgpuBuffer,
    ) -> Result<()> {
        let variant = self.variant(dtype)?;
        check_raw_step(
            step,
            dtype,
            n,
            stride,
            [
                x.describe("x"),
                model_out.describe("model output"),
                state.describe("solver state"),
            ],
        )?;
        let pipeline = self.pipeline(PipelineKey {
            kernel: Kernel::SolverStep,
            variant,
            workgroup_size: self.workgroup_size,
        })?;
        // n fits u32: it is at most x's length, and a bindable buffer is smaller.
        // stride fits u32 whenever a slot is used (slots·stride ≤ state's length).
        let params = SolverStepParams::new(step, launch, n as u32, stride as u32);
        let items = if variant == ShaderVariant::F16Packed {
            n.div_ceil(2)
        } else {
            n
        };
        let groups =
            (items.div_ceil(self.workgroup_size as usize) as u32).clamp(1, self.max_workgroups);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: x.buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: model_out.buffer.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: state.buffer.as_entire_binding(),
                },
            ],
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        let _guard = self
            .submit
            .lock()
            .map_err(|_| device_error("submit lock poisoned"))?;
        // The params write lands before this submission and after every earlier one.
        self.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        self.queue.submit([encoder.finish()]);
        self.launches.fetch_add(1, Ordering::Relaxed);
        self.take_uncaptured()
    }
}
