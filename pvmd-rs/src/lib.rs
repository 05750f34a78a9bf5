//! pvmd-rs: a drop-in replacement for the PVM 3.4.6 daemon.
//!
//! Decisions live in plain structs ([`daemon::Daemon`], [`hostfile`], [`cli`]) that tests drive
//! without sockets; [`server`] is the thin tokio shell that owns sockets and signals, and
//! `main.rs` does the legacy startup sequence (files in PVM_TMP, address line on stdout).

pub mod cli;
pub mod conn;
pub mod daemon;
pub mod dgauth; // hardening: optional HMAC on datagrams between pvm-rs daemons
pub mod files;
pub mod guard; // hardening: local access checks
pub mod harness; // hardening: in-process driver for hostile-input tests and fuzzing
pub mod hostfile;
pub mod hosts; // multi-host
pub mod launch;
pub mod limits; // hardening: per-client caps
pub mod log;
pub mod manual; // multi-host: so=ms
pub mod mbox;
pub mod metrics; // optional Prometheus endpoint on loopback (PVMD_METRICS)
pub mod notify;
pub mod registry;
pub mod server;
pub mod slave; // multi-host
pub mod spawn_sys;
pub mod sys;
pub mod wire;

/// Version the daemon reports in its log, as the legacy one does (libpvm never reads it).
pub const PVM_VER: &str = "3.4.6";
/// Architecture name of this build.
pub const ARCH: &str = "LINUX64";
