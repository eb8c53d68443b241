//! Validates every WGSL variant the wgpu backend compiles with naga, so a
//! shader error fails `cargo build` with its file and line. CUDA kernels are
//! compiled at run time by NVRTC (embedded with `include_str!`), so nothing here
//! needs a CUDA toolchain.

use std::path::Path;

include!("src/backend/wgpu/variants.rs");

/// (element-wise source, packed entry point) pairs under shaders/.
const SHADERS: &[(&str, &str)] = &[("solver.wgsl", "solver_packed.wgsl")];

fn read(name: &str) -> String {
    let path = Path::new("shaders").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn validate(label: &str, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| e.emit_to_string_with_path(source, label))?;
    let caps = naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(source, label))?;
    Ok(())
}

fn main() {
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-changed=src/backend/wgpu/variants.rs");
    let mut failures = Vec::new();
    for (elementwise, packed) in SHADERS {
        let (src, packed_src) = (read(elementwise), read(packed));
        for variant in ALL_VARIANTS {
            // Line numbers refer to the assembled variant (for F16Packed, past the marker they are in the packed file).
            let label = format!("shaders/{elementwise} ({variant:?} variant)");
            match assemble(variant, &src, &packed_src) {
                Ok(source) => {
                    if let Err(e) = validate(&label, &source) {
                        failures.push(e);
                    }
                }
                Err(e) => failures.push(format!("{label}: {e}")),
            }
        }
    }
    if !failures.is_empty() {
        panic!("WGSL validation failed:\n{}", failures.join("\n"));
    }
}
