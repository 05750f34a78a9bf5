//! The server is a PVM task: it talks to its pvmd through libpvm3 (the legacy one or ours,
//! whichever `libpvm3.so.3` is found at run time).
fn main() {
    println!("cargo:rustc-link-arg-bins=-lpvm3");
}
