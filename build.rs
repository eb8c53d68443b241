//! Validates every WGSL variant the wgpu backend compiles with naga, so a
//! shader error fails `cargo build` with its file and line. CUDA kernels are
//! compiled at run time by NVRTC (embedded with `include_str!`), so nothing here
//! needs a CUDA toolchain: a machine without nvcc builds the same.
//!
//! Every `shaders/X.wgsl` is validated in every variant it has: f32 as
//! written; native f16 when it declares `alias Elem = f32;`; packed f16 when
//! `shaders/X_packed.wgsl` exists too. Variants are assembled exactly as the
//! backend assembles them (src/backend/wgpu/variants.rs, `include!`d below);
//! errors are reported at the line of the file they come from.

use std::path::Path;

include!("src/backend/wgpu/variants.rs");

/// Suffix of a packed-f16 entry point that belongs to `X.wgsl`.
const PACKED_SUFFIX: &str = "_packed.wgsl";

fn read(name: &str) -> String {
    let path = Path::new("shaders").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `*.wgsl` file names under shaders/, sorted.
fn wgsl_files() -> Vec<String> {
    let dir = std::fs::read_dir("shaders").unwrap_or_else(|e| panic!("reading shaders/: {e}"));
    let mut names: Vec<String> = dir
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    names.sort();
    names
}

/// Parse and validate with every capability the backend may request
/// (SHADER_F16 included); on error, the 1-based line in `source` and the
/// full diagnostic.
fn validate(label: &str, source: &str) -> Result<(), (Option<u32>, String)> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        let line = e.location(source).map(|l| l.line_number);
        (line, e.emit_to_string_with_path(source, label))
    })?;
    let caps = naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| {
            // The narrowest span (the offending expression, not its function).
            let line = e
                .spans()
                .filter_map(|&(span, _)| Some((span.to_range()?.len(), span)))
                .min_by_key(|&(len, _)| len)
                .map(|(_, span)| span.location(source).line_number);
            (line, e.emit_to_string_with_path(source, label))
        })?;
    Ok(())
}

/// Map a line of an assembled variant back to (file, line): the packed entry
/// point is appended last; the element-wise source may follow a prefix
/// (`enable f16;`).
fn origin<'a>(
    assembled: &str,
    line: u32,
    elementwise: (&'a str, &str),
    packed: Option<(&'a str, &str)>,
) -> (&'a str, u32) {
    let lines_before = |offset: usize| assembled[..offset].matches('\n').count() as u32;
    if let Some((name, text)) = packed {
        if let Some(start) = assembled.len().checked_sub(text.len()) {
            if assembled.ends_with(text) && line > lines_before(start) {
                return (name, line - lines_before(start));
            }
        }
    }
    let (name, text) = elementwise;
    let first = text.lines().next().unwrap_or("");
    let prefix = assembled.find(first).map_or(0, lines_before);
    (name, line.saturating_sub(prefix).max(1))
}

fn main() {
    println!("cargo:rerun-if-changed=shaders");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/backend/wgpu/variants.rs");
    let names = wgsl_files();
    let mut failures = Vec::new();
    for name in &names {
        if let Some(base) = name.strip_suffix(PACKED_SUFFIX) {
            if !names.contains(&format!("{base}.wgsl")) {
                failures.push(format!(
                    "shaders/{name}: packed entry point without shaders/{base}.wgsl"
                ));
            }
            continue;
        }
        let src = read(name);
        let packed_name = name.replace(".wgsl", PACKED_SUFFIX);
        let packed = names.contains(&packed_name).then(|| read(&packed_name));
        for variant in variants_of(&src, packed.is_some()) {
            let source = match assemble(variant, &src, packed.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("shaders/{name}: {e}"));
                    continue;
                }
            };
            let (label, what) = (
                format!("{name}, {variant:?} variant as assembled"),
                format!("the {variant:?} variant of shaders/{name}"),
            );
            if let Err((line, diagnostic)) = validate(&label, &source) {
                let (file, line) = match line {
                    Some(l) => {
                        let p = packed.as_deref().map(|p| (packed_name.as_str(), p));
                        let (file, line) = origin(&source, l, (name.as_str(), &src), p);
                        (file, line.to_string())
                    }
                    None => (name.as_str(), "?".into()),
                };
                failures.push(format!(
                    "shaders/{file}:{line}: invalid WGSL in {what}\n{diagnostic}"
                ));
            }
        }
    }
    if !failures.is_empty() {
        panic!("WGSL validation failed:\n{}", failures.join("\n"));
    }
}
