//! Errors of the migration driver. Each names the step, the host (network namespace) and
//! where the CRIU log is, because that log is the only place CRIU explains itself.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MigError {
    #[error("CRIU not found or too old ({0}); run ci/criu-setup (CRIU >= 4.1 is needed on kernels >= 6.13)")]
    NoCriu(String),
    #[error("{what} is unavailable here: {reason}")]
    Unavailable { what: &'static str, reason: String },
    #[error("{step} failed (exit {status}); CRIU log {log}:\n{tail}")]
    Criu {
        step: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{step} did not finish within {limit:?}")]
    Timeout { step: &'static str, limit: Duration },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("image transfer: {0}")]
    Transfer(String),
}

pub type Result<T> = std::result::Result<T, MigError>;

/// Wraps an io::Error with the step it happened in.
pub(crate) fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> MigError {
    move |source| MigError::Io { step, source }
}
