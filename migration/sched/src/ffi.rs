//! The PVM C calls the scheduler makes, through pvm-rs's task library (linked in): the shared
//! safe wrappers of `pvm3::client`. Using the C interface keeps the scheduler an ordinary PVM
//! task: it speaks the legacy task protocol to either daemon.

pub use pvm3::client::*;

/// Publishes the send buffer under `name` in the mailbox, replacing an older entry of ours.
pub fn replace_info(name: &str) -> i32 {
    delinfo(name, 0, 0);
    putinfo(name, PVM_MBOX_DEFAULT)
}
