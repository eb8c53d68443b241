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

/// Every variant.
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

/// The variants a source has: f32 always; native f16 when it declares the
/// `Elem` alias; packed f16 when it also has a packed entry point. Used by
/// build.rs, which validates each one.
#[allow(dead_code)]
pub fn variants_of(source: &str, has_packed: bool) -> Vec<ShaderVariant> {
    let elementwise = source.contains(ELEM_ALIAS);
    ALL_VARIANTS
        .into_iter()
        .filter(|v| match v {
            ShaderVariant::F32 => true,
            ShaderVariant::F16Native => elementwise,
            ShaderVariant::F16Packed => elementwise && has_packed,
        })
        .collect()
}

/// Build the source of `variant` from a source and its packed entry point, if
/// it has one. Fails if the variant needs an alias, marker or packed entry
/// point the sources lack.
pub fn assemble(
    variant: ShaderVariant,
    source: &str,
    packed_entry: Option<&str>,
) -> Result<String, String> {
    if variant == ShaderVariant::F32 {
        return Ok(source.to_string());
    }
    if source.matches(ELEM_ALIAS).count() != 1 {
        return Err(format!(
            "an f16 variant needs the source to declare `{}` on one line, once",
            ELEM_ALIAS.trim()
        ));
    }
    match variant {
        ShaderVariant::F16Native => Ok(format!(
            "enable f16;\n{}",
            source.replacen(ELEM_ALIAS, "\nalias Elem = f16;\n", 1)
        )),
        _ => {
            let packed_entry =
                packed_entry.ok_or_else(|| "no packed-f16 entry point".to_string())?;
            let shared = source
                .split(ENTRY_MARKER)
                .next()
                .filter(|_| source.contains(ENTRY_MARKER))
                .ok_or_else(|| format!("source lacks the `{ENTRY_MARKER}` marker"))?;
            Ok(format!("{shared}\n{packed_entry}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "// mentions alias Elem = f32; in a comment\nalias Elem = f32;\nfn f() {}\n// ---- ENTRY POINT\nfn main() {}\n";

    #[test]
    fn native_f16_changes_the_declaration_not_the_comment() {
        let s = assemble(ShaderVariant::F16Native, SRC, None).unwrap();
        assert!(s.starts_with("enable f16;\n"));
        assert!(s.contains("\nalias Elem = f16;\n"));
        assert!(!s.contains("\nalias Elem = f32;\n"));
        assert!(s.contains("// mentions alias Elem = f32; in a comment"));
    }

    #[test]
    fn packed_replaces_the_entry_point() {
        let s = assemble(ShaderVariant::F16Packed, SRC, Some("fn packed() {}")).unwrap();
        assert!(s.contains("fn f() {}") && s.contains("fn packed() {}") && !s.contains("fn main"));
    }

    #[test]
    fn sources_without_alias_marker_or_packed_entry_are_rejected() {
        assert!(assemble(ShaderVariant::F16Native, "fn f() {}", None).is_err());
        let no_marker = "\nalias Elem = f32;\nfn f() {}";
        assert!(assemble(ShaderVariant::F16Packed, no_marker, Some("")).is_err());
        assert!(assemble(ShaderVariant::F16Packed, SRC, None).is_err());
        assert_eq!(
            assemble(ShaderVariant::F32, "fn f() {}", None).unwrap(),
            "fn f() {}"
        );
    }

    #[test]
    fn variants_follow_the_alias_and_the_packed_entry() {
        use ShaderVariant::*;
        assert_eq!(variants_of("fn f() {}", false), [F32]);
        assert_eq!(variants_of(SRC, false), [F32, F16Native]);
        assert_eq!(variants_of(SRC, true), [F32, F16Native, F16Packed]);
    }
}
