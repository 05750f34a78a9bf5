//! The master's side of growing and shrinking the machine (startup.md §4, §8; ddpro.c:
//! addhosts(), dm_htupdack(), dm_delhost()).
//!
//! Adding: each host line is resolved and given an index; the shell runs the start command
//! (`$PVM_RSH host [-l login] '<dx> -s -d.. -n<name> <mi> <mip> <mtu> <hi> <hip>:0000'`) and
//! hands back the first `ddpro<…>` line (this daemon plays pvmd' itself instead of forking a
//! copy); once every host of the request answered, the new hosts get DM_SLCONF and the full
//! DM_HTUPD, the old ones DM_HTUPD with the new hosts; when every DM_HTUPDACK is in (or its
//! host failed) everyone gets DM_HTCOMMIT, the requester its reply, and PvmHostAdd watchers
//! their notice.

use std::net::{Ipv4Addr, SocketAddrV4, ToSocketAddrs};

use pvm_proto::body::{AddHostAck, Body, HostEntry, HostNames, HtUpd, SlConf, StatusList};
use pvm_proto::codes::{Dm, PvmError};
use pvm_proto::ddp::PeerConfig;
use pvm_proto::Tid;

use super::{AuthFiles, Daemon, Out, Request};
use crate::hostfile::{self, HostLine, HostOpts, Hostfile};
use crate::hosts::{hex_addr, parse_ddpro_line, Host};
use crate::wire;

/// Who asked for an add or delete.
#[derive(Debug, Clone, Copy)]
enum Requester {
    Task {
        conn: super::ConnId,
        src: Tid,
        hdr: pvm_proto::mesg::MsgHeader,
    },
    Host {
        host: u32,
        wid: i32,
    },
    /// The hostfile at start-up.
    Boot,
}

/// A start command for the shell to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveStart {
    /// Host index being added (identifies the answer).
    pub index: u32,
    /// The rsh argv: program, host, [-l, login], command string.
    pub argv: Vec<String>,
    /// Written to the slave's stdin first (`PVM_VMID=<id>\n`), if any.
    pub stdin: Option<String>,
    /// Manual start (`so=ms`): nothing is run; the host's name, for the prompt that asks a
    /// person to run `argv[0]` (the slave command line) there and type its reply line.
    pub manual: Option<String>,
}

#[derive(Debug, Clone)]
struct Candidate {
    line: HostLine,
    index: Option<u32>,
    ip: Ipv4Addr,
    /// Error for this host, or the table entry once started.
    result: Option<Result<Host, i32>>,
}

#[derive(Debug)]
struct Adding {
    requester: Requester,
    hosts: Vec<Candidate>,
    /// Waiting for DM_HTUPDACK from these hosts.
    acks: Vec<u32>,
    table: Option<crate::hosts::HostTable>,
}

/// Host adds in progress and what the master needs to start slaves.
#[derive(Debug, Default)]
pub struct MasterState {
    pub hostfile: Hostfile,
    adding: Option<Adding>,
    /// Queued adds while one is running (the boot list, or adds from slaves).
    queued: Vec<(Requester, Vec<String>)>,
    starts: Vec<SlaveStart>,
    last_index: u32,
    /// `-d` mask passed on to slaves.
    pub debug: u32,
}

fn fill(o: &mut HostOpts, d: &HostOpts) {
    fn f<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
        if a.is_none() {
            a.clone_from(b);
        }
    }
    f(&mut o.login, &d.login);
    f(&mut o.start_opts, &d.start_opts);
    f(&mut o.dpath, &d.dpath);
    f(&mut o.epath, &d.epath);
    f(&mut o.bpath, &d.bpath);
    f(&mut o.wdir, &d.wdir);
    f(&mut o.speed, &d.speed);
    f(&mut o.aname, &d.aname);
    f(&mut o.vmid, &d.vmid);
}

fn resolve(name: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = name.parse::<Ipv4Addr>() {
        return Some(ip);
    }
    (name, 0).to_socket_addrs().ok()?.find_map(|a| match a.ip() {
        std::net::IpAddr::V4(v) => Some(v),
        _ => None,
    })
}

impl<A: AuthFiles> Daemon<A> {
    /// Hostfile for add defaults and the hosts to start at boot (those without `&`).
    pub fn set_hostfile(&mut self, hf: Hostfile, boot: Vec<String>) {
        let debug = self.debug;
        let Some(n) = self.net.as_mut() else { return };
        n.master.hostfile = hf;
        n.master.debug = debug;
        if !boot.is_empty() {
            n.master.queued.push((Requester::Boot, boot));
        }
    }

    /// Start commands the shell should run now.
    pub fn take_slave_starts(&mut self) -> Vec<SlaveStart> {
        let mut out = Vec::new();
        self.next_add(&mut out);
        self.net
            .as_mut()
            .map(|n| std::mem::take(&mut n.master.starts))
            .unwrap_or_default()
    }

    pub(super) fn master_timers(&mut self, _out: &mut [Out]) {}

    pub(super) fn master_addhost(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let lines = match wire::parse_addhost(req.body) {
            Ok(l) if !l.is_empty() && l.len() <= Tid::MAX_HOST as usize => l,
            _ => return false,
        };
        let r = Requester::Task {
            conn: req.conn,
            src: req.src,
            hdr: req.hdr,
        };
        self.begin_add(r, lines, out);
        true
    }

    pub(super) fn dm_add(&mut self, from: u32, wid: i32, names: HostNames, out: &mut Vec<Out>) {
        let lines = names.names.iter().map(|n| n.to_string_lossy()).collect();
        self.begin_add(Requester::Host { host: from, wid }, lines, out);
    }

    fn begin_add(&mut self, r: Requester, lines: Vec<String>, out: &mut Vec<Out>) {
        let loopback = self.host.ip_hex.starts_with("7f");
        let Some(n) = self.net.as_mut() else { return };
        if n.master.adding.is_some() {
            if matches!(r, Requester::Boot) {
                n.master.queued.push((r, lines));
            } else {
                let body = wire::int_body(PvmError::Already.code());
                self.add_reply(r, &body, out);
            }
            return;
        }
        let mut cands = Vec::new();
        let mut taken: Vec<u32> = Vec::new();
        for l in &lines {
            let parsed = hostfile::parse_line(l, 0);
            let mut line = match parsed {
                Ok(Some(h)) => h,
                _ => {
                    out.push(Out::Log(format!("addhosts() bad host line <{l}>")));
                    cands.push(Candidate {
                        line: HostLine {
                            name: l.clone(),
                            no_start: false,
                            overload: false,
                            opts: HostOpts::default(),
                            line: 0,
                        },
                        index: None,
                        ip: Ipv4Addr::UNSPECIFIED,
                        result: Some(Err(PvmError::BadParam.code())),
                    });
                    continue;
                }
            };
            if let Some(h) = n.master.hostfile.find(&line.name) {
                fill(&mut line.opts, &h.opts.clone());
                line.overload |= h.overload;
            }
            let d = n.master.hostfile.defaults.clone();
            fill(&mut line.opts, &d);
            let aname = line.opts.aname.clone().unwrap_or_else(|| line.name.clone());
            let ip = resolve(&aname);
            let err = match ip {
                None => Some(PvmError::NoHost.code()),
                Some(_) if loopback => Some(PvmError::IpLoopback.code()),
                Some(ip) if !line.overload && n.table.by_addr_ip(ip).is_some() => Some(PvmError::DupHost.code()),
                Some(ip) if cands.iter().any(|c: &Candidate| c.ip == ip && c.result.is_none()) => {
                    Some(PvmError::DupHost.code())
                }
                _ => None,
            };
            let index = if err.is_none() {
                let i = n.table.free_index(n.master.last_index.max(1), &taken);
                if let Some(i) = i {
                    taken.push(i);
                    n.master.last_index = i;
                }
                i
            } else {
                None
            };
            let err = err.or(if index.is_none() {
                Some(PvmError::OutOfRes.code())
            } else {
                None
            });
            cands.push(Candidate {
                line,
                index,
                ip: ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                result: err.map(Err),
            });
        }
        // Start commands for the rest.
        let me = self.host.index;
        let own = n.table.get(me).cloned();
        let debug = n.master.debug;
        let rsh = std::env::var("PVM_RSH")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/usr/bin/rsh".to_string());
        let dpath_default = std::env::var("PVM_DPATH")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "pvmd".to_string());
        for c in cands.iter_mut().filter(|c| c.result.is_none()) {
            let (Some(i), Some(own)) = (c.index, own.as_ref()) else {
                continue;
            };
            let manual = c.line.opts.start_opts.as_deref() == Some("ms");
            let dpath = c.line.opts.dpath.clone().unwrap_or_else(|| dpath_default.clone());
            // -S: the slave prints its line and goes on without waiting for a byte on stdin
            // (nobody holds its stdin open), as the legacy manual start asks.
            let cmd = format!(
                "{dpath} -{} -d0x{debug:x} -n{} {me} {} {} {i} {}",
                if manual { 'S' } else { 's' },
                c.line.name,
                hex_addr(own.addr),
                own.mtu,
                hex_addr(SocketAddrV4::new(c.ip, 0))
            );
            if manual {
                out.push(Out::Log(format!(
                    "addhosts() {}: manual start (so=ms): waiting for the reply to <{cmd}>",
                    c.line.name
                )));
                n.master.starts.push(SlaveStart {
                    index: i,
                    argv: vec![cmd],
                    stdin: None,
                    manual: Some(c.line.name.clone()),
                });
                continue;
            }
            let mut argv = vec![
                rsh.clone(),
                c.line.opts.aname.clone().unwrap_or_else(|| c.line.name.clone()),
            ];
            if let Some(l) = &c.line.opts.login {
                argv.push("-l".into());
                argv.push(l.clone());
            }
            argv.push(cmd);
            n.master.starts.push(SlaveStart {
                index: i,
                argv,
                stdin: c.line.opts.vmid.as_ref().map(|v| format!("PVM_VMID={v}\n")),
                manual: None,
            });
        }
        n.master.adding = Some(Adding {
            requester: r,
            hosts: cands,
            acks: Vec::new(),
            table: None,
        });
        self.add_progress(out);
    }

    /// The first line a start command printed (`Err` = it printed none, or timed out).
    pub fn slave_started(&mut self, index: u32, line: Result<String, String>) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(n) = self.net.as_mut() else { return out };
        let Some(a) = n.master.adding.as_mut() else { return out };
        let Some(c) = a
            .hosts
            .iter_mut()
            .find(|c| c.index == Some(index) && c.result.is_none())
        else {
            return out;
        };
        let res = match line {
            Ok(l) => parse_ddpro_line(&l).inspect_err(|_| {
                out.push(Out::Log(format!("startack() {}: {l}", c.line.name)));
            }),
            Err(e) => {
                out.push(Out::Log(format!("startack() {}: {e}", c.line.name)));
                Err(PvmError::CantStart.code())
            }
        };
        c.result = Some(res.map(|r| Host {
            index,
            name: c.line.name.clone(),
            arch: r.arch,
            addr: r.addr,
            mtu: r.mtu,
            speed: c.line.opts.speed.unwrap_or(1000),
            dsig: r.dsig,
        }));
        self.add_progress(&mut out);
        out
    }

    /// Moves the running add on: all started -> table update; all acknowledged -> commit.
    fn add_progress(&mut self, out: &mut Vec<Out>) {
        let me = self.host.index;
        let sched_field = self.rm_slconf_field(); // rm.rs: the RM, for DM_SLCONF
        let Some(n) = self.net.as_mut() else { return };
        let Some(a) = n.master.adding.as_mut() else { return };
        if a.hosts.iter().any(|c| c.result.is_none()) {
            return;
        }
        if a.table.is_none() {
            // Everyone answered: send the update.
            let new: Vec<Host> = a
                .hosts
                .iter()
                .filter_map(|c| c.result.as_ref().and_then(|r| r.as_ref().ok()).cloned())
                .collect();
            let mut t = n.table.clone();
            t.serial += 1;
            for h in &new {
                t.hosts.insert(h.index, h.clone());
                let _ =
                    n.ep.add_peer(h.index, PeerConfig::legacy(h.addr, h.mtu.max(64) as usize));
            }
            a.table = Some(t.clone());
            let full = Body::DmHtUpd(HtUpd {
                serial: t.serial,
                master: t.master as i32,
                console: t.console as i32,
                hosts: t.hosts.values().map(Host::to_entry).collect(),
            })
            .emit();
            let part = Body::DmHtUpd(HtUpd {
                serial: t.serial,
                master: t.master as i32,
                console: t.console as i32,
                hosts: new.iter().map(Host::to_entry).collect(),
            })
            .emit();
            let old: Vec<u32> = n.table.hosts.keys().copied().filter(|h| *h != me).collect();
            let slconf: Vec<(u32, Vec<u8>)> = a
                .hosts
                .iter()
                .filter(|c| matches!(c.result, Some(Ok(_))))
                .map(|c| {
                    let mut e = Vec::new();
                    let o = &c.line.opts;
                    for (f, v) in [(1, &o.epath), (2, &o.bpath), (3, &o.wdir)] {
                        if let Some(v) = v {
                            e.push((f, v.as_str().into()));
                        }
                    }
                    if let Some((f, v)) = &sched_field {
                        e.push((*f, v.as_str().into())); // as the legacy master does
                    }
                    (c.index.unwrap_or(0), Body::DmSlConf(SlConf { entries: e }).emit())
                })
                .collect();
            let mut sends = Vec::new();
            for (h, conf) in slconf {
                sends.push((h, Dm::SlConf, conf, false));
                sends.push((h, Dm::HtUpd, full.clone(), true));
            }
            for h in old {
                sends.push((h, Dm::HtUpd, part.clone(), true));
            }
            for (h, dm, body, wait) in sends {
                let wid = if wait { self.wait_htupd(h).unwrap_or(0) } else { 0 };
                if wait {
                    if let Some(a) = self.net.as_mut().and_then(|n| n.master.adding.as_mut()) {
                        a.acks.push(h);
                    }
                }
                self.dm_send(h, dm.code(), wid, &body, out);
            }
        }
        let Some(n) = self.net.as_mut() else { return };
        let Some(a) = n.master.adding.as_ref() else { return };
        if !a.acks.is_empty() {
            return;
        }
        let Some(a) = n.master.adding.take() else { return };
        let table = a.table.unwrap_or_else(|| n.table.clone());
        let others: Vec<u32> = table.hosts.keys().copied().filter(|h| *h != me).collect();
        let new: Vec<u32> = a
            .hosts
            .iter()
            .filter_map(|c| c.result.as_ref()?.as_ref().ok().map(|h| h.index))
            .collect();
        let narches = table.narches();
        if self.debug & 0x10 != 0 {
            out.push(Out::Log(format!(
                "addhosts() commit serial {}, {} hosts added",
                table.serial,
                new.len()
            )));
        }
        for h in others {
            self.dm_send(h, Dm::HtCommit.code(), 0, &[], out);
        }
        let entries: Vec<HostEntry> = a
            .hosts
            .iter()
            .map(|c| match &c.result {
                Some(Ok(h)) => HostEntry {
                    tid: Tid(h.hostpart()),
                    name: h.name.as_str().into(),
                    arch: h.arch.as_str().into(),
                    speed: h.speed,
                    dsig: h.dsig,
                },
                Some(Err(e)) => HostEntry {
                    tid: Tid(*e),
                    name: c.line.name.as_str().into(),
                    arch: "".into(),
                    speed: 0,
                    dsig: 0,
                },
                None => HostEntry {
                    tid: Tid(PvmError::CantStart.code()),
                    name: c.line.name.as_str().into(),
                    arch: "".into(),
                    speed: 0,
                    dsig: 0,
                },
            })
            .collect();
        for e in &entries {
            if e.tid.0 < 0 {
                out.push(Out::Log(format!(
                    "addhosts() {} failed: {}",
                    e.name.to_string_lossy(),
                    e.tid.0
                )));
            }
        }
        let body = Body::TmAddHostAck(AddHostAck {
            status: entries.len() as i32,
            narches: Some(narches),
            hosts: entries,
        })
        .emit();
        self.add_reply(a.requester, &body, out);
        // Reply first, then the PvmHostAdd notices (as the legacy master orders them).
        self.commit_table(table, out);
        for h in &new {
            self.xcaps_probe(*h, out);
        }
    }

    fn add_reply(&mut self, r: Requester, body: &[u8], out: &mut Vec<Out>) {
        if self.debug & 0x10 != 0 {
            out.push(Out::Log(format!("addhosts() reply ({} bytes) to {r:?}", body.len())));
        }
        match r {
            Requester::Task { conn, src, hdr } => {
                let b = wire::frame_message(src, Tid::LOCAL_PVMD, hdr.tag, hdr.ctx, hdr.wid, body);
                out.push(Out::Send(conn, b));
            }
            Requester::Host { host, wid } => self.dm_send(host, Dm::AddAck.code(), wid, body, out),
            Requester::Boot => {}
        }
    }

    /// Starts the next queued add, if none is running.
    fn next_add(&mut self, out: &mut Vec<Out>) {
        let Some(n) = self.net.as_mut() else { return };
        if n.master.adding.is_some() || n.master.queued.is_empty() {
            return;
        }
        let (r, lines) = n.master.queued.remove(0);
        self.begin_add(r, lines, out);
    }

    pub(super) fn htupd_acked(&mut self, host: u32, out: &mut Vec<Out>) {
        if self.debug & 0x10 != 0 {
            out.push(Out::Log(format!("dm_htupdack() from host {host}")));
        }
        if let Some(a) = self.net.as_mut().and_then(|n| n.master.adding.as_mut()) {
            a.acks.retain(|h| *h != host);
        }
        self.add_progress(out);
    }

    pub(super) fn master_delhost(&mut self, req: &Request, out: &mut Vec<Out>) -> bool {
        let Ok(names) = wire::parse_addhost(req.body) else {
            return false;
        };
        let body = self.delete_hosts(&names, out);
        self.reply(req, req.src, &body, out);
        true
    }

    pub(super) fn dm_delhost(&mut self, from: u32, wid: i32, names: HostNames, out: &mut Vec<Out>) {
        let names: Vec<String> = names.names.iter().map(|n| n.to_string_lossy()).collect();
        let body = self.delete_hosts(&names, out);
        self.dm_send(from, Dm::DelHostAck.code(), wid, &body, out);
    }

    /// FIN to each named host, DM_HTDEL to the rest; the `{n, status[n]}` reply.
    fn delete_hosts(&mut self, names: &[String], out: &mut Vec<Out>) -> Vec<u8> {
        let me = self.host.index;
        let mut results = Vec::new();
        let mut gone = Vec::new();
        for name in names {
            let idx = self.net.as_ref().and_then(|n| n.table.by_name(name).map(|h| h.index));
            match idx {
                None => results.push(PvmError::NoHost.code()),
                Some(i) if i == me => results.push(PvmError::BadParam.code()),
                Some(i) => {
                    if let Some(n) = self.net.as_mut() {
                        let now = n.now();
                        let _ = n.ep.send_fin(now, i);
                    }
                    out.push(Out::Log(format!("dm_delhost() deleting {name}")));
                    gone.push(i);
                    results.push(0);
                }
            }
        }
        for h in &gone {
            self.host_gone(*h, out);
        }
        if !gone.is_empty() {
            self.broadcast_htdel(&gone, out);
        }
        Body::TmDelHostAck(StatusList {
            status: results.len() as i32,
            results,
        })
        .emit()
    }
}

/// Host lines of a hostfile to start at boot: those without `&` that are not this host.
pub fn boot_lines(hf: &Hostfile, own_name: &str) -> Vec<String> {
    hf.hosts
        .iter()
        .filter(|h| !h.no_start && h.name != own_name)
        .map(|h| h.name.clone())
        .collect()
}
