//! Errors of the scheduler, with what a person needs to act on them.

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error("policy file {file}, line {line}: {why}")]
    Policy { file: String, line: usize, why: String },
    #[error("cannot enrol in PVM: {0} (is a pvmd running?)")]
    Enrol(String),
    #[error("cannot register as resource manager: {0}")]
    Register(String),
    #[error("no scheduler is running (nothing under \"pvm-sched\" in the PVM mailbox)")]
    NotRunning,
    #[error("the scheduler did not answer in time")]
    NoAnswer,
    #[error("{0}")]
    Usage(String),
}
