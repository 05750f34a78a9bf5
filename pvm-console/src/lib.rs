//! The PVM console (`pvm`) and trace viewer (`pvmtrace`).
//!
//! Both programs are ordinary PVM tasks: they call the C API of our `libpvm3` (linked in
//! as the `libpvm3-shim` rlib), so they run against the legacy pvmd and against pvmd-rs alike.
//! The pure parts (command-line splitting, output formats, trace decoding, diagram drawing)
//! live here so they can be tested without a daemon.

pub mod diagram;
pub mod ffi;
pub mod format;
pub mod tev;
