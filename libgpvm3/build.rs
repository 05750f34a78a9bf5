//! The shared library keeps the legacy soname so programs linked against the legacy
//! `libgpvm3.so.3` load this one unchanged. It records libpvm3 by soname only, so at run time it
//! uses whichever `libpvm3.so.3` the program loads: the legacy one or ours.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libgpvm3.so.3");
    println!("cargo:rustc-link-lib=dylib=pvm3");
}
