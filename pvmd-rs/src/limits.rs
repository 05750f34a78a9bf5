//! Per-client resource caps (hardening). Each cap bounds what one task can make the daemon
//! hold, so that a runaway or hostile task gets an error for itself (and a log line) instead of
//! exhausting a daemon-wide limit that every other task shares.
//!
//! Daemon-wide caps stay where they are (`mbox::MAX_BYTES`, `daemon::MAX_DB_WAITERS`,
//! `notify::MAX_PENDING`, the ddp endpoint's queues); these sit below them.

/// Mailbox entries one task may own at a time.
pub const MBOX_ENTRIES_PER_TASK: usize = 4096;
/// Mailbox bytes (stored messages and class names) one task may own at a time; a quarter of
/// the daemon-wide `mbox::MAX_BYTES`, so no single task can fill the mailbox for everyone.
pub const MBOX_BYTES_PER_TASK: usize = 16 << 20;
/// `PvmMboxWaitForInfo` lookups one connection may have outstanding (libpvm waits for each
/// reply, so a real task has one).
pub const DB_WAITERS_PER_TASK: usize = 64;
/// Tasks one parent may have spawned here that have not connected yet.
pub const PENDING_SPAWNS_PER_TASK: usize = 1024;
