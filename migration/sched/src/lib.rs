//! pvm-sched: the global scheduler of pvm-rs (docs/scheduler.md). A PVM resource manager that
//! places every spawn by measured load and owner activity, and moves guest tasks off a host
//! whose owner returns.
//!
//! [`sched`] holds the decisions (pure, unit-tested), [`load`] the measurements, [`policy`]
//! the policy file, [`rm`] the PVM task that carries them out, [`apps`] the applications it
//! checkpoints and restarts after a host failure, [`agent`] the per-host measurement agent.

pub mod agent;
pub mod apps;
pub mod error;
mod ffi;
pub mod load;
pub mod policy;
pub mod rm;
pub mod sched;

pub use error::SchedError;
