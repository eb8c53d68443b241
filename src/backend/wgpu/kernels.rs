//! The WGSL kernel table and the layouts and pipelines built from it.
//!
//! Each family declares its kernels (entry point, storage bindings, params
//! size) once; bind-group layouts are built once per kernel and pipelines once
//! per (kernel, storage variant, workgroup size), then cached. Binding 0 of
//! every kernel is its params block, read at a dynamic offset of the uniform
//! arena, so many dispatches with different parameters can share one submission.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, OnceLock};

use super::variants::{assemble, ShaderVariant};
use super::{fft, guidance, krylov, nn, operator, solver};
use crate::error::Result;

/// How a kernel uses one storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A `shaders/<family>.wgsl` source and its packed-f16 entry points, if any
/// (`shaders/<family>_packed.wgsl`). A source that declares the `Elem` alias
/// also has a native-f16 variant.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
    pub packed: Option<&'static str>,
}

impl Family {
    /// The WGSL of `variant`, assembled like build.rs validates it.
    fn source(&self, variant: ShaderVariant) -> std::result::Result<String, String> {
        assemble(variant, self.source, self.packed)
    }
}

/// One compute entry point: `@binding(0)` is its uniform params block, then
/// one storage binding per entry of `bindings`, numbered from 1.
#[derive(Debug)]
pub struct Kernel {
    /// Position in [`KERNELS`]: the index layouts are cached under.
    pub id: usize,
    pub family: &'static Family,
    pub entry: &'static str,
    pub bindings: &'static [Access],
    /// Size of the params block (a `#[repr(C)]` struct mirrored in WGSL).
    pub params_size: u64,
}

/// Every kernel; `KERNELS[i].id == i`.
pub const KERNELS: &[&Kernel] = &[
    &solver::STEP,
    &operator::APPLY,
    &guidance::PASS,
    &nn::CONV2D,
    &nn::MATMUL,
    &nn::GROUP_NORM,
    &nn::SOFTMAX,
    &nn::ELEMENTWISE,
    &krylov::CG_PASS,
    &krylov::DDS_PASS,
    &fft::LINES,
    &fft::POINTWISE,
];

/// Layouts of one kernel.
struct Layouts {
    bind_group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: usize,
    variant: ShaderVariant,
    workgroup_size: u32,
}

/// Layouts and pipelines, built on first use and kept for the device's life.
pub(super) struct KernelCache {
    layouts: Vec<OnceLock<Layouts>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

impl KernelCache {
    pub fn new() -> Self {
        KernelCache {
            layouts: KERNELS.iter().map(|_| OnceLock::new()).collect(),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    fn layouts(&self, device: &wgpu::Device, kernel: &Kernel) -> Result<&Layouts> {
        let cell = self.layouts.get(kernel.id).ok_or_else(|| {
            super::device_error(format!("kernel {} is not in KERNELS", kernel.entry))
        })?;
        Ok(cell.get_or_init(|| build_layouts(device, kernel)))
    }

    pub fn bind_group_layout(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
    ) -> Result<&wgpu::BindGroupLayout> {
        Ok(&self.layouts(device, kernel)?.bind_group)
    }

    /// The pipeline of `kernel` in `variant` at `workgroup_size`.
    pub fn pipeline(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        variant: ShaderVariant,
        workgroup_size: u32,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            kernel: kernel.id,
            variant,
            workgroup_size,
        };
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| super::device_error("pipeline cache poisoned"))?;
        if let Some(p) = cache.get(&key) {
            return Ok(Arc::clone(p));
        }
        let layout = &self.layouts(device, kernel)?.pipeline;
        let source = kernel.family.source(variant).map_err(super::device_error)?;
        let label = format!("diffinv {}/{}", kernel.family.name, kernel.entry);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(layout),
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[("WORKGROUP_SIZE", f64::from(workgroup_size))],
                ..Default::default()
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(super::device_error(format!(
                "creating the {variant:?} pipeline of {label}: {e}"
            )));
        }
        let pipeline = Arc::new(pipeline);
        cache.insert(key, Arc::clone(&pipeline));
        Ok(pipeline)
    }
}

fn build_layouts(device: &wgpu::Device, kernel: &Kernel) -> Layouts {
    let label = format!("diffinv {}/{}", kernel.family.name, kernel.entry);
    let params = wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: NonZeroU64::new(kernel.params_size),
        },
        count: None,
    };
    let storage =
        kernel
            .bindings
            .iter()
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *access == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
    let entries: Vec<_> = std::iter::once(params).chain(storage).collect();
    let bind_group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(&label),
        entries: &entries,
    });
    let pipeline = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&bind_group)],
        immediate_size: 0,
    });
    Layouts {
        bind_group,
        pipeline,
    }
}
