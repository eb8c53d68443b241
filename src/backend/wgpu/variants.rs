// Assembly of the WGSL variants from the sources in shaders/. Plain functions
// with no crate dependencies, because build.rs `include!`s this file to
// validate exactly what the backend compiles.

/// How f16 tensors are stored in a shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShaderVariant {
    /// `array<f32>`.
    F32,
    /// `array<f16>` (needs the adapter's SHADER_F16).
    F16Native,
    /// Two halves per `array<u32>` word (any adapter).
    F16Packed,
}

/// Every variant, for build-time validation (build.rs `include!`s this file).
#[allow(dead_code)]
pub const ALL_VARIANTS: [ShaderVariant; 3] = [
    ShaderVariant::F32,
    ShaderVariant::F16Native,
    ShaderVariant::F16Packed,
];

/// The line (whole, at the start of a line) every element-wise source declares
/// its storage type with.
const ELEM_ALIAS: &str = "\nalias Elem = f32;\n";
/// Separates a source's shared code from its element-wise entry point.
const ENTRY_MARKER: &str = "// ---- ENTRY POINT";

/// Build the source of `variant` from an element-wise source and its packed
/// entry point. Fails if a source lacks the alias or the marker.
pub fn assemble(
    variant: ShaderVariant,
    elementwise: &str,
    packed_entry: &str,
) -> Result<String, String> {
    if elementwise.matches(ELEM_ALIAS).count() != 1 {
        return Err(format!(
            "element-wise source must declare `{}` on one line, once",
            ELEM_ALIAS.trim()
        ));
    }
    Ok(match variant {
        ShaderVariant::F32 => elementwise.to_string(),
        ShaderVariant::F16Native => format!(
            "enable f16;\n{}",
            elementwise.replacen(ELEM_ALIAS, "\nalias Elem = f16;\n", 1)
        ),
        ShaderVariant::F16Packed => {
            let shared = elementwise
                .split(ENTRY_MARKER)
                .next()
                .filter(|_| elementwise.contains(ENTRY_MARKER))
                .ok_or_else(|| format!("element-wise source lacks the `{ENTRY_MARKER}` marker"))?;
            format!("{shared}\n{packed_entry}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "// mentions alias Elem = f32; in a comment\nalias Elem = f32;\nfn f() {}\n// ---- ENTRY POINT\nfn main() {}\n";

    #[test]
    fn native_f16_changes_the_declaration_not_the_comment() {
        let s = assemble(ShaderVariant::F16Native, SRC, "").unwrap();
        assert!(s.starts_with("enable f16;\n"));
        assert!(s.contains("\nalias Elem = f16;\n"));
        assert!(!s.contains("\nalias Elem = f32;\n"));
        assert!(s.contains("// mentions alias Elem = f32; in a comment"));
    }

    #[test]
    fn packed_replaces_the_entry_point() {
        let s = assemble(ShaderVariant::F16Packed, SRC, "fn packed() {}").unwrap();
        assert!(s.contains("fn f() {}") && s.contains("fn packed() {}") && !s.contains("fn main"));
    }

    #[test]
    fn sources_without_alias_or_marker_are_rejected() {
        assert!(assemble(ShaderVariant::F32, "fn f() {}", "").is_err());
        assert!(assemble(
            ShaderVariant::F16Packed,
            "\nalias Elem = f32;\nfn f() {}",
            ""
        )
        .is_err());
    }
}
