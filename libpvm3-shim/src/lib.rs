//! A drop-in `libpvm3.so.3` (PVM 3.4.6 task library) in Rust.
//!
//! Programs built against the legacy library run unchanged with this one on their
//! `LD_LIBRARY_PATH`: same exported names and signatures (`/work/shared/spec/libpvm3.symbols`),
//! same data objects with the legacy sizes, same wire protocol to the pvmd and to other tasks.
//! The protocol bodies and user-data encodings come from `pvm-proto`.
//!
//! Layout: [`core`] holds the task state and the pvmd connection, [`api`] the `pvm_*` exports,
//! [`route`] direct task-task routes, [`internals`] the non-`pvm_` helpers legacy also exports,
//! `csrc/shim.c` the variadic functions and the data objects.
#![allow(clippy::missing_safety_doc)]

pub mod api;
pub use pvm_arena as arena;
pub mod client;
pub mod core;
#[doc(hidden)]
pub mod fuzz_hooks;
pub mod internals;
pub mod lazy;
pub mod net;
pub mod park;
pub mod parksig;
pub mod pcopy;
pub mod pool;
pub mod route;
pub mod spin;
pub mod tev;
pub mod vmread;

/// The library's large blocks (message bodies) live in a shared arena that pvm-rs peers of the
/// host copy from (`arena.rs`); everything else goes to the system allocator.
#[global_allocator]
static ALLOC: arena::ShimAlloc = arena::ShimAlloc;
