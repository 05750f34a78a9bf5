//! The library records libpvm3 by soname only, so at run time it uses whichever
//! `libpvm3.so.3` the program loads: the legacy one or ours. The group routines (libgpvm3) are
//! looked up at run time, so programs without groups link with `-lfpvm3 -lpvm3` as with the
//! legacy static archive.
fn main() {
    println!("cargo:rustc-link-lib=dylib=pvm3");
}
