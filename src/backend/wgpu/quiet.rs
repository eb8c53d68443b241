//! Opening wgpu instances without driver chatter on stderr.

/// Every adapter of a fresh instance.
pub(super) fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}
