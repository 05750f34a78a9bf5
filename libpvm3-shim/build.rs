//! Builds the C half of the library and links it as a drop-in `libpvm3.so.3`.
//!
//! C is used only where Rust cannot express the ABI: variadic functions (`pvm_packf`,
//! `pvmlogprintf`, ...) and data objects that must have the legacy sizes (`pvm_errlist`,
//! `pvmtevinfo`, ...). The archive is linked whole because nothing in Rust references most of it,
//! and `csrc/exports.map` lists those C symbols: rustc's own version script hides every symbol
//! it did not define, and a second version script is merged with it by the linker.
fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.c");
    println!("cargo:rerun-if-changed=csrc/exports.map");
    cc::Build::new()
        .file("csrc/shim.c")
        .warnings(true)
        .link_lib_modifier("+whole-archive")
        .compile("pvm3shimc");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpvm3.so.3");
    println!("cargo:rustc-cdylib-link-arg=-Wl,--version-script={dir}/csrc/exports.map");
}
