//! `pvmgs`: the PVM group server task. Registers its tid in mailbox class "pvmgs" (the group
//! library looks it up there), then serves requests in context SYSCTX_DG until told to die.
//! Decisions are in the library (`pvmgs::Server`); this file only talks to libpvm3.

use std::ffi::CString;
use std::os::raw::{c_char, c_int};

use pvmgs::{tag, Item, Out, Request, Server};

const SYSCTX_DG: c_int = 0x7fffc;
const PVM_DATA_DEFAULT: c_int = 0;
const PVM_TASK_EXIT: c_int = 1;

extern "C" {
    fn pvm_mytid() -> c_int;
    fn pvm_exit() -> c_int;
    fn pvm_perror(msg: *const c_char) -> c_int;
    fn pvm_setcontext(ctx: c_int) -> c_int;
    fn pvm_initsend(enc: c_int) -> c_int;
    fn pvm_setsbuf(buf: c_int) -> c_int;
    fn pvm_freebuf(buf: c_int) -> c_int;
    fn pvm_getrbuf() -> c_int;
    fn pvm_putinfo(name: *const c_char, buf: c_int, flags: c_int) -> c_int;
    fn pvm_recv(tid: c_int, tag: c_int) -> c_int;
    fn pvm_bufinfo(buf: c_int, bytes: *mut c_int, tag: *mut c_int, tid: *mut c_int) -> c_int;
    fn pvm_send(tid: c_int, tag: c_int) -> c_int;
    fn pvm_mcast(tids: *mut c_int, n: c_int, tag: c_int) -> c_int;
    fn pvm_notify(what: c_int, tag: c_int, n: c_int, tids: *mut c_int) -> c_int;
    fn pvm_tidtohost(tid: c_int) -> c_int;
    fn pvm_pkint(p: *const c_int, n: c_int, s: c_int) -> c_int;
    fn pvm_upkint(p: *mut c_int, n: c_int, s: c_int) -> c_int;
    fn pvm_pkstr(p: *const c_char) -> c_int;
    fn pvm_upkstr(p: *mut c_char) -> c_int;
}

fn perror(what: &str) {
    let s = CString::new(what).unwrap_or_default();
    // SAFETY: NUL-terminated string.
    unsafe { pvm_perror(s.as_ptr()) };
}

/// Puts our tid in the mailbox; fails when another server registered first.
fn register(tid: c_int) -> bool {
    // SAFETY: plain C API calls on buffers we create and free.
    unsafe {
        let saved = pvm_setsbuf(0);
        let buf = pvm_initsend(PVM_DATA_DEFAULT);
        pvm_pkint(&tid, 1, 1);
        let cc = pvm_putinfo(c"pvmgs".as_ptr(), buf, 0);
        if cc != 0 {
            perror("Group Server already running?");
        }
        pvm_setsbuf(saved);
        pvm_freebuf(buf);
        cc == 0
    }
}

/// Unpacks a group name; the message length bounds the string.
fn upk_name(len: c_int) -> Vec<u8> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0) + 1];
    // SAFETY: the string cannot be longer than the message that carries it.
    if unsafe { pvm_upkstr(buf.as_mut_ptr().cast()) } < 0 {
        return Vec::new();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(n);
    buf
}

fn upk_int() -> c_int {
    let mut v: c_int = 0;
    // SAFETY: one int into a local.
    unsafe { pvm_upkint(&mut v, 1, 1) };
    v
}

fn decode(msgtag: c_int, len: c_int) -> Request {
    match msgtag {
        tag::DIE => Request::Die,
        tag::JOIN => Request::Join(upk_name(len)),
        tag::LEAVE => Request::Leave(upk_name(len)),
        tag::DEADTID => Request::DeadTid(upk_int()),
        tag::BARRIER | tag::BARRIERV => {
            let group = upk_name(len);
            Request::Barrier {
                group,
                count: upk_int(),
                by_host: msgtag == tag::BARRIERV,
            }
        }
        tag::BCAST | tag::TIDLIST => Request::TidList {
            group: upk_name(len),
            holes_not_allowed: msgtag == tag::TIDLIST,
        },
        tag::GSIZE => Request::Gsize(upk_name(len)),
        tag::GETINST => {
            let g = upk_name(len);
            Request::GetInst(g, upk_int())
        }
        tag::GETTID => {
            let g = upk_name(len);
            Request::GetTid(g, upk_int())
        }
        tag::STATICGROUP => {
            let g = upk_name(len);
            Request::Static(g, upk_int())
        }
        tag::DUMP => Request::Dump,
        tag::GSLS => Request::Ls,
        tag::HOSTCHAR => {
            let g = upk_name(len);
            Request::HostChar(g, upk_int())
        }
        tag::HOSTCHARV => Request::HostCharV(upk_name(len)),
        _ => Request::Other,
    }
}

fn pack(body: &[Item]) {
    // SAFETY: plain C API calls packing our own data into the active send buffer.
    unsafe {
        pvm_initsend(PVM_DATA_DEFAULT);
        for item in body {
            match item {
                Item::Int(v) => {
                    pvm_pkint(v, 1, 1);
                }
                Item::Ints(v) if !v.is_empty() => {
                    pvm_pkint(v.as_ptr(), c_int::try_from(v.len()).unwrap_or(0), 1);
                }
                Item::Ints(_) => {}
                Item::Str(s) => {
                    let c = CString::new(s.clone()).unwrap_or_default();
                    pvm_pkstr(c.as_ptr());
                }
            }
        }
    }
}

fn main() {
    // SAFETY: plain C API calls.
    let mytid = unsafe { pvm_mytid() };
    if mytid < 0 {
        perror("pvmgs");
        std::process::exit(255);
    }
    if register(mytid) {
        // SAFETY: plain C API call.
        unsafe { pvm_setcontext(SYSCTX_DG) };
        serve(mytid);
    }
    // SAFETY: plain C API call.
    unsafe { pvm_exit() };
}

fn serve(mytid: c_int) {
    // SAFETY: pvm_tidtohost is a pure computation on the tid.
    let mut server = Server::new(mytid, |t| unsafe { pvm_tidtohost(t) });
    loop {
        // SAFETY: plain C API calls on the receive buffer.
        let (len, msgtag, from) = unsafe {
            if pvm_recv(-1, -1) < 0 {
                perror("gs_handle(recv)");
                return;
            }
            let (mut len, mut msgtag, mut from) = (0, 0, 0);
            if pvm_bufinfo(pvm_getrbuf(), &mut len, &mut msgtag, &mut from) < 0 {
                perror("gs_handle(bufinfo)");
                return;
            }
            (len, msgtag, from)
        };
        let req = decode(msgtag, len);
        for out in server.handle(from, req) {
            // SAFETY: plain C API calls; the tid lists are ours.
            unsafe {
                match out {
                    Out::Send { to, tag, body } => {
                        pack(&body);
                        if pvm_send(to, tag) < 0 {
                            perror("gs_handle(send)");
                        }
                    }
                    Out::Mcast { mut to, tag, body } => {
                        pack(&body);
                        pvm_mcast(to.as_mut_ptr(), c_int::try_from(to.len()).unwrap_or(0), tag);
                    }
                    Out::NotifyExit(mut tid) => {
                        if pvm_notify(PVM_TASK_EXIT, tag::DEADTID, 1, &mut tid) < 0 {
                            perror("pvmgs-join");
                        }
                    }
                    Out::Print(text) => eprint!("{text}"),
                    Out::Exit => return,
                }
            }
        }
    }
}
