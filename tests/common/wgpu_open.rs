//! Shared wgpu backends for the tests (one device per f16 variant per process).

use std::sync::OnceLock;

use diffinv::backend::wgpu::{WgpuBackend, WgpuOptions};

use super::skip;

static NATIVE: OnceLock<Option<WgpuBackend>> = OnceLock::new();
static PACKED: OnceLock<Option<WgpuBackend>> = OnceLock::new();

/// The wgpu backend (software adapters allowed), with native `f16` shaders or
/// forced onto the packed-u32 fallback. `None` (after a printed skip) if no adapter opens.
pub fn wgpu(force_packed_f16: bool) -> Option<&'static WgpuBackend> {
    let cell = if force_packed_f16 { &PACKED } else { &NATIVE };
    cell.get_or_init(|| {
        let opts = WgpuOptions {
            force_packed_f16,
            allow_software: true,
        };
        match WgpuBackend::with_options(opts) {
            Ok(b) => {
                if !force_packed_f16 && !b.uses_native_f16() {
                    skip(
                        "wgpu",
                        format!(
                            "adapter {} lacks SHADER_F16",
                            diffinv::Backend::device_name(&b)
                        ),
                    );
                    return None;
                }
                Some(b)
            }
            Err(e) => {
                skip("wgpu", e);
                None
            }
        }
    })
    .as_ref()
}
