//! `include/diffinv.h` is what cbindgen generates from `src/` today: a change
//! to the ABI shows up as a diff of the checked-in header. To accept one, run
//! this test with `DIFFINV_CAPI_BLESS=1`, which rewrites the header.

use std::path::Path;

#[test]
fn checked_in_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = crate_dir.join("include/diffinv.h");
    if std::env::var_os("DIFFINV_CAPI_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/diffinv.h differs from what cbindgen generates now; review the ABI change \
         and rerun with DIFFINV_CAPI_BLESS=1 to update it.\n--- generated ---\n{generated}"
    );
}
