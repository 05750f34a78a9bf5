//! The master's side of growing and shrinking the machine (startup.md §4, §8).

use pvm_proto::body::HostNames;

use super::{AuthFiles, Daemon, Out, Request};

/// Host adds and deletes in progress.
#[derive(Debug, Default)]
pub struct MasterState {}

impl<A: AuthFiles> Daemon<A> {
    pub(super) fn master_timers(&mut self, _out: &mut [Out]) {}

    pub(super) fn master_addhost(&mut self, _req: &Request, _out: &mut Vec<Out>) -> bool {
        false
    }

    pub(super) fn master_delhost(&mut self, _req: &Request, _out: &mut Vec<Out>) -> bool {
        false
    }

    pub(super) fn dm_add(&mut self, _from: u32, _wid: i32, _names: HostNames, _out: &mut Vec<Out>) {}

    pub(super) fn dm_delhost(&mut self, _from: u32, _wid: i32, _names: HostNames, _out: &mut Vec<Out>) {}

    pub(super) fn htupd_acked(&mut self, _host: u32, _out: &mut Vec<Out>) {}
}
