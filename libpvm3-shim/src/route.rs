//! Direct task-task routes (PvmRouteDirect), negotiated with TC_CONREQ / TC_CONACK through the
//! pvmds (wire.md §4.6).
//!
//! This first version answers every TC_CONREQ with a denial (ack 1), which legacy tasks accept
//! by continuing to route through the pvmd, and never requests a route itself.

use crate::core::{Lib, TC_CONACK};
use pvm_proto::codes::{SYSCTX_TC, TDPROTOCOL};
use pvm_proto::encoding::Unpacker;

pub fn on_conreq(lib: &mut Lib, src: i32, _u: &mut Unpacker<'_>) {
    let mut p = crate::core::xdr();
    let _ = p.pk_int(&[TDPROTOCOL, 1]);
    let _ = p.pk_str(b"");
    let me = lib.mytid;
    let _ = lib.send_raw(me, src, TC_CONACK, SYSCTX_TC, 0, p.body(), true);
}

pub fn on_conack(_lib: &mut Lib, _src: i32, _u: &mut Unpacker<'_>) {}

pub fn on_taskexit(lib: &mut Lib, tid: i32) {
    lib.routes.remove(&tid);
}

/// A listening or connected route socket is readable.
pub fn ready(lib: &mut Lib, tid: i32) {
    if let Some(crate::core::RouteState::Open(s)) = lib.routes.get_mut(&tid) {
        s.drain();
    }
}

/// Before a send: with PvmRouteDirect, legacy asks the peer for a route. Not yet: messages go
/// through the pvmd, which legacy tasks also do whenever a route is refused.
pub fn maybe_request(_lib: &mut Lib, _dst: i32) {}
