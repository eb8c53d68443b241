//! Opening wgpu instances without driver chatter on stderr.
//!
//! On Linux, Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` asks
//! libwayland for a display whenever the instance enables the Wayland surface
//! extension (wgpu always does), and libwayland prints
//! `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` when
//! there is no session — on every headless machine, once per instance. To a
//! newcomer that reads as a broken install. Without a runtime dir there is no
//! Wayland display for the layer to find, so turning the layer off with its own
//! switch (`NODEVICE_SELECT=1`) changes nothing but the noise: this backend
//! orders adapters itself. Nothing else is touched, so real errors stay visible.

use std::sync::Once;

/// Every adapter of a fresh instance.
pub(super) fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    silence_headless_wayland_probe();
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
}

/// Whether the Wayland probe can only fail: no usable `XDG_RUNTIME_DIR`.
fn headless() -> bool {
    std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|dir| !std::path::Path::new(&dir).is_dir())
}

fn silence_headless_wayland_probe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if cfg!(target_os = "linux") && headless() && std::env::var_os("NODEVICE_SELECT").is_none()
        {
            // Set once, before this process's first Vulkan instance, while the
            // Once holds back every other backend constructor of this crate.
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}
