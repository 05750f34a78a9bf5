//! pvm-migration: task migration and checkpoint/restart for pvm-rs (the MIST extensions),
//! with CRIU (>= 4.1) as the single-process checkpointer. See docs/migration.md.
//!
//! The daemon calls [`probe::probe`] once at start-up (what works here, and why not), then the
//! blocking operations of [`Criu`] on a blocking thread. Hosts are network namespaces in the
//! tests and on one machine; the same calls with `netns: None` act on the real host.

pub mod criu;
pub mod error;
pub mod hog;
pub mod netns;
pub mod probe;
mod proc;
pub mod progress; // progress lines for the console and pvm-migrate
pub mod transfer;

pub use criu::{pipe_key, Criu, Dumped, Inherit, LazyDump, LazyPages, Migrated, Mode, Phases, Restored};
pub use error::{MigError, Result};
pub use netns::{Host, NetPair};
pub use probe::{Cap, Capabilities};
pub use proc::signal;

/// The daemon shares one `Criu` between blocking tasks and moves results across threads.
#[cfg(test)]
mod thread_bounds {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn driver_types_cross_threads() {
        send_sync::<super::Criu>();
        send_sync::<super::Capabilities>();
        send::<super::Restored>();
        send::<super::Migrated>();
        send::<super::MigError>();
    }
}
