//! The few TM_ message bodies this daemon reads and writes, and the framing of its replies.
//!
//! Kept in one module on purpose: these bodies will move to `pvm_proto::body` once that exists,
//! and only this file will have to change.

use pvm_proto::codes::{ENC_XDR, MSGHDR_LEN};
use pvm_proto::frag::{FragFlags, StreamFragHeader, HEADER_LEN as FRAG_LEN};
use pvm_proto::mesg::MsgHeader;
use pvm_proto::xdr::{XdrReader, XdrWriter};
use pvm_proto::{ParseError, Tid};

type Result<T> = std::result::Result<T, ParseError>;

/// TM_CONNECT request: the task's protocol version and the path of its t-auth file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectReq {
    pub version: i32,
    pub auth_path: String,
}

impl ConnectReq {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = XdrReader::new(body);
        let version = r.int("TM_CONNECT version")?;
        let auth_path = r.string("TM_CONNECT t-auth path")?;
        Ok(ConnectReq { version, auth_path })
    }
}

/// TM_CONNECT reply: our version, accept flag and the path of the d-auth file.
pub fn connect_reply(version: i32, accept: bool, dauth: &str) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(version).int(accept as i32).string(dauth);
    w.into_inner()
}

/// TM_CONN2 request: pid, cookie (PVMEPID or 0), and an optional task name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn2Req {
    pub pid: i32,
    pub cookie: i32,
    pub name: Option<String>,
}

impl Conn2Req {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = XdrReader::new(body);
        let pid = r.int("TM_CONN2 pid")?;
        let cookie = r.int("TM_CONN2 cookie")?;
        // The name is optional; a malformed one is ignored as the legacy daemon does.
        let name = if r.is_empty() {
            None
        } else {
            r.string("TM_CONN2 task name").ok()
        };
        Ok(Conn2Req { pid, cookie, name })
    }
}

/// What a task learns about itself at connect time (TM_CONN2 reply) and from TM_GETOPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSettings {
    pub tid: Tid,
    pub ptid: Tid,
    pub outtid: i32,
    pub outctx: i32,
    pub outtag: i32,
    pub trctid: i32,
    pub trcctx: i32,
    pub trctag: i32,
    pub udpmax: i32,
    pub dsig: i32,
    /// The pvmd's UDP address as `"%08x:%04x"`.
    pub ip: String,
    pub schedtid: i32,
}

impl TaskSettings {
    fn emit_into(&self, w: &mut XdrWriter) {
        w.int(self.tid.0)
            .int(self.ptid.0)
            .int(self.outtid)
            .int(self.outctx)
            .int(self.outtag)
            .int(self.trctid)
            .int(self.trcctx)
            .int(self.trctag)
            .int(self.udpmax)
            .int(self.dsig)
            .string(&self.ip)
            .int(self.schedtid);
    }

    /// TM_CONN2 reply: a leading ack (1) and the settings.
    pub fn conn2_reply(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.int(1);
        self.emit_into(&mut w);
        w.into_inner()
    }

    /// TM_GETOPT reply: the settings without the ack.
    pub fn getopt_reply(&self) -> Vec<u8> {
        let mut w = XdrWriter::new();
        self.emit_into(&mut w);
        w.into_inner()
    }
}

/// A body that is a single int (PSTAT, MSTAT, CONTEXT, DB status, ...).
pub fn int_body(v: i32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(v);
    w.into_inner()
}

/// Reads the leading int of a request body.
pub fn parse_int(body: &[u8], field: &'static str) -> Result<i32> {
    XdrReader::new(body).int(field)
}

/// Reads a request body that is a single string.
pub fn parse_string(body: &[u8], field: &'static str) -> Result<String> {
    XdrReader::new(body).string(field)
}

/// One host of a TM_CONFIG reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// Host part of the tids (`0x40000` for host 1); the legacy daemon sends it without the
    /// pvmd bit.
    pub hostpart: i32,
    pub name: String,
    pub arch: String,
    pub speed: i32,
    pub dsig: i32,
}

pub fn config_reply(hosts: &[HostEntry], narch: i32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(hosts.len() as i32).int(narch);
    for h in hosts {
        w.int(h.hostpart)
            .string(&h.name)
            .string(&h.arch)
            .int(h.speed)
            .int(h.dsig);
    }
    w.into_inner()
}

/// One task of a TM_TASK reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    pub tid: Tid,
    pub ptid: Tid,
    pub hostpart: i32,
    pub flag: i32,
    pub a_out: String,
    pub pid: i32,
}

pub fn task_reply(err: i32, tasks: &[TaskEntry]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(err);
    for t in tasks {
        w.int(t.tid.0)
            .int(t.ptid.0)
            .int(t.hostpart)
            .int(t.flag)
            .string(&t.a_out)
            .int(t.pid);
    }
    w.into_inner()
}

/// TM_ADDHOST request: the host lines.
pub fn parse_addhost(body: &[u8]) -> Result<Vec<String>> {
    let mut r = XdrReader::new(body);
    let n = r.count("TM_ADDHOST count", 4)?;
    (0..n).map(|_| r.string("TM_ADDHOST host line")).collect()
}

/// TM_ADDHOST reply where every host failed: count, narch 0, `{err, "", "", 0, 0}` per host.
pub fn addhost_errors(errs: &[i32]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(errs.len() as i32).int(0);
    for e in errs {
        w.int(*e).string("").string("").int(0).int(0);
    }
    w.into_inner()
}

/// TM_NOTIFY request: what, ctx, tag, count, and for task/host kinds `count` tids.
pub fn parse_notify(body: &[u8]) -> Result<(i32, i32, i32, i32, Vec<i32>)> {
    let mut r = XdrReader::new(body);
    let what = r.int("TM_NOTIFY what")?;
    let ctx = r.int("TM_NOTIFY ctx")?;
    let tag = r.int("TM_NOTIFY tag")?;
    let count = r.int("TM_NOTIFY count")?;
    let mut tids = Vec::new();
    if matches!(what & 0xff, 1 | 2) && count > 0 {
        let n = (count as usize).min(r.remaining() / 4);
        for _ in 0..n {
            tids.push(r.int("TM_NOTIFY tid")?);
        }
    }
    Ok((what, ctx, tag, count, tids))
}

/// `int n; int v[n]` (TM_MCA tids, TM_TICKLE arguments).
pub fn parse_tid_list(body: &[u8], what: &'static str) -> Result<Vec<i32>> {
    let mut r = XdrReader::new(body);
    let n = r.count(what, 4)?;
    (0..n).map(|_| r.int(what)).collect()
}

pub fn parse_two_ints(body: &[u8], a: &'static str, b: &'static str) -> Result<(i32, i32)> {
    let mut r = XdrReader::new(body);
    Ok((r.int(a)?, r.int(b)?))
}

/// TM_SPAWN request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnReq {
    pub file: String,
    pub flags: i32,
    /// Host or architecture; a `:dir` suffix names the working directory.
    pub where_: String,
    pub count: i32,
    pub argv: Vec<String>,
    pub outtid: i32,
    pub outctx: i32,
    pub outtag: i32,
    pub trctid: i32,
    pub trcctx: i32,
    pub trctag: i32,
    pub env: Vec<String>,
}

impl SpawnReq {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = XdrReader::new(body);
        let file = r.string("TM_SPAWN file")?;
        let flags = r.int("TM_SPAWN flags")?;
        let where_ = r.string("TM_SPAWN where")?;
        let count = r.int("TM_SPAWN count")?;
        let nargs = r.count("TM_SPAWN nargs", 4)?;
        let argv = (0..nargs)
            .map(|_| r.string("TM_SPAWN argv"))
            .collect::<Result<Vec<_>>>()?;
        let outtid = r.int("TM_SPAWN outtid")?;
        let outctx = r.int("TM_SPAWN outctx")?;
        let outtag = r.int("TM_SPAWN outtag")?;
        let trctid = r.int("TM_SPAWN trctid")?;
        let trcctx = r.int("TM_SPAWN trcctx")?;
        let trctag = r.int("TM_SPAWN trctag")?;
        let nenv = r.count("TM_SPAWN nenv", 4)?;
        let env = (0..nenv)
            .map(|_| r.string("TM_SPAWN env"))
            .collect::<Result<Vec<_>>>()?;
        Ok(SpawnReq {
            file,
            flags,
            where_,
            count,
            argv,
            outtid,
            outctx,
            outtag,
            trctid,
            trcctx,
            trctag,
            env,
        })
    }
}

/// TM_SPAWN reply: the count, then a tid or an error per task.
pub fn spawn_reply(tids: &[i32]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(tids.len() as i32);
    for t in tids {
        w.int(*t);
    }
    w.into_inner()
}

/// Task output record for an output collector: `{tid, len-or-code, [bytes]}`.
pub fn output_record(tid: Tid, code: i32, data: &[u8]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(tid.0).int(code);
    if !data.is_empty() {
        w.opaque(data);
    }
    w.into_inner()
}

/// TM_HOSTSYNC reply: status and the daemon's time of day.
pub fn hostsync_reply(status: i32, sec: i32, usec: i32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(status).int(sec).int(usec);
    w.into_inner()
}

/// TM_SETOPT request: `{int what; string value}` pairs until the body ends.
pub fn parse_setopt(body: &[u8]) -> Vec<(i32, String)> {
    let mut r = XdrReader::new(body);
    let mut out = Vec::new();
    while !r.is_empty() {
        let Ok(what) = r.int("TM_SETOPT what") else { break };
        let Ok(val) = r.string("TM_SETOPT value") else { break };
        out.push((what, val));
    }
    out
}

/// The head of a TM_DB request; the embedded message of a PUT is left unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbReq {
    pub op: i32,
    pub tid: i32,
    pub class: String,
    pub index: i32,
    pub flags: i32,
    /// Offset of what follows the head (the embedded message of a PUT).
    pub rest: usize,
}

impl DbReq {
    pub fn parse(body: &[u8]) -> Result<Self> {
        let mut r = XdrReader::new(body);
        let op = r.int("TM_DB op")?;
        let tid = r.int("TM_DB tid")?;
        let class = r.string("TM_DB class")?;
        let index = r.int("TM_DB index")?;
        let flags = r.int("TM_DB flags")?;
        Ok(DbReq {
            op,
            tid,
            class,
            index,
            flags,
            rest: r.position(),
        })
    }
}

/// TM_DB GET reply: the index, then the stored embedded message as it was put.
/// TM_DB GET reply: the index, then the stored embedded message. The legacy daemon re-packs
/// the message it stored and its copy starts with an empty fragment (`int 0` right after the
/// eight header ints, seen in every capture); it is inserted here too so the bytes are equal
/// (libpvm skips empty fragments either way).
pub fn db_get_reply(index: i32, msg: &[u8]) -> Vec<u8> {
    let mut v = int_body(index);
    if msg.len() >= 32 {
        v.extend_from_slice(&msg[..32]);
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&msg[32..]);
    } else {
        v.extend_from_slice(msg);
    }
    v
}

/// One class in a NAMES reply: its name and `(index, owner tid, flags)` per entry.
pub type ClassInfo = (String, Vec<(i32, i32, i32)>);

/// TM_DB NAMES reply: status 0, class count, then per class its entries.
pub fn db_names_reply(classes: &[ClassInfo]) -> Vec<u8> {
    let mut w = XdrWriter::new();
    w.int(0).int(classes.len() as i32);
    for (name, entries) in classes {
        w.string(name).int(entries.len() as i32);
        for (index, owner, flags) in entries {
            w.int(*index).int(*owner).int(*flags);
        }
    }
    w.into_inner()
}

/// Largest fragment payload a pvmd sends to a task: the legacy fragment size (4080) minus the
/// fragment header. Replies are cut at multiples of 4 so no XDR item straddles two fragments.
pub const MAX_FRAG_PAYLOAD: usize = pvm_proto::codes::UDPMAXLEN - FRAG_LEN;

/// Frames a whole message (XDR) from `src` to `dst` as stream fragments.
pub fn frame_message(dst: Tid, src: Tid, tag: i32, ctx: i32, wid: i32, body: &[u8]) -> Vec<u8> {
    let hdr = MsgHeader {
        enc: ENC_XDR,
        tag,
        ctx,
        wid,
        crc: 0,
    }
    .to_bytes();
    let mut out = Vec::with_capacity(FRAG_LEN + MSGHDR_LEN + body.len() + 16);
    let first_room = MAX_FRAG_PAYLOAD - MSGHDR_LEN;
    let mut rest = body;
    let mut first = true;
    loop {
        let room = if first { first_room } else { MAX_FRAG_PAYLOAD };
        let take = rest.len().min(room);
        let (chunk, tail) = rest.split_at(take);
        let mut flags = FragFlags::empty();
        if first {
            flags |= FragFlags::SOM;
        }
        if tail.is_empty() {
            flags |= FragFlags::EOM;
        }
        let len = chunk.len() + if first { MSGHDR_LEN } else { 0 };
        let fh = StreamFragHeader {
            dst,
            src,
            len: len as u32,
            flags,
        };
        out.extend_from_slice(&fh.to_bytes());
        if first {
            out.extend_from_slice(&hdr);
        }
        out.extend_from_slice(chunk);
        rest = tail;
        first = false;
        if rest.is_empty() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn connect_request_from_capture() {
        let frame = hex("80000000ffffffff0000003c0300000010000000800100010007fffe00000000
             0000000100000000000000000000000000000526000000142f746d702f70766d
             746d703031303836322e3000");
        let req = ConnectReq::parse(&frame[48..]).unwrap();
        assert_eq!(req.version, 1318);
        assert_eq!(req.auth_path, "/tmp/pvmtmp010862.0");
    }

    #[test]
    fn connect_reply_matches_capture() {
        let want = hex("0000000080000000000000400300000010000000800100010007fffe00000000
             000000010000000000000000000000000000052600000001000000142f746d70
             2f70766d746d703031303834322e3100");
        let body = connect_reply(1318, true, "/tmp/pvmtmp010842.1");
        let got = frame_message(Tid(0), Tid::LOCAL_PVMD, 0x8001_0001u32 as i32, 0x7fffe, 1, &body);
        assert_eq!(got, want);
    }

    #[test]
    fn conn2_reply_matches_capture() {
        let want = hex("0004000180000000000000640300000010000000800100020007fffe00000000
             0000000200000000000000000000000000000001000400010000000000000000
             000000000000000000000000000000000000000000000ff000408c410000000e
             37663030303030313a3830316500000000000000");
        let s = TaskSettings {
            tid: Tid(0x40001),
            ptid: Tid(0),
            outtid: 0,
            outctx: 0,
            outtag: 0,
            trctid: 0,
            trcctx: 0,
            trctag: 0,
            udpmax: 4080,
            dsig: 0x408c41,
            ip: "7f000001:801e".into(),
            schedtid: 0,
        };
        let got = frame_message(
            Tid(0x40001),
            Tid::LOCAL_PVMD,
            0x8001_0002u32 as i32,
            0x7fffe,
            2,
            &s.conn2_reply(),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn conn2_request_with_and_without_name() {
        let r = Conn2Req::parse(&hex("00002a6e 00000000")).unwrap();
        assert_eq!((r.pid, r.cookie, r.name), (0x2a6e, 0, None));
        let r = Conn2Req::parse(&hex("00000001 00000002 00000003 61620000")).unwrap();
        assert_eq!(r.name.as_deref(), Some("ab"));
        assert!(Conn2Req::parse(&hex("00000001")).is_err());
    }

    #[test]
    fn config_reply_matches_capture() {
        let want = hex("00000001000000010004000000000003766d0000000000084c494e5558363400000003e800408c41");
        let got = config_reply(
            &[HostEntry {
                hostpart: 0x40000,
                name: "vm".into(),
                arch: "LINUX64".into(),
                speed: 1000,
                dsig: 0x408c41,
            }],
            1,
        );
        assert_eq!(got, want);
    }

    #[test]
    fn task_reply_layout() {
        let got = task_reply(
            0,
            &[TaskEntry {
                tid: Tid(0x4000b),
                ptid: Tid(0),
                hostpart: 0x40000,
                flag: 4,
                a_out: String::new(),
                pid: 0x3374,
            }],
        );
        // Capture pads the empty string with garbage ("INU"); we write zeros.
        assert_eq!(
            got,
            hex("00000000 0004000b 00000000 00040000 00000004 00000001 00000000 00003374")
        );
    }

    #[test]
    fn long_bodies_are_split_on_4_byte_boundaries() {
        let body = vec![7u8; 10_000];
        let framed = frame_message(Tid(0x40001), Tid::LOCAL_PVMD, 5, 0, 0, &body);
        let mut at = 0;
        let mut payload = 0;
        let mut n = 0;
        while at < framed.len() {
            let h = StreamFragHeader::parse(&framed[at..], u32::MAX).unwrap();
            assert!(h.len as usize <= MAX_FRAG_PAYLOAD);
            let data = h.len as usize - if n == 0 { MSGHDR_LEN } else { 0 };
            assert_eq!(
                data % 4,
                if at + FRAG_LEN + h.len as usize == framed.len() {
                    data % 4
                } else {
                    0
                }
            );
            assert_eq!(h.flags.contains(FragFlags::SOM), n == 0);
            payload += data;
            at += FRAG_LEN + h.len as usize;
            n += 1;
            assert_eq!(h.flags.contains(FragFlags::EOM), at == framed.len());
        }
        assert_eq!(payload, body.len());
        assert_eq!(n, 3);
    }

    #[test]
    fn addhost_reply_matches_capture() {
        // Legacy reply to pvm_addhosts({"vm"}) on a loopback master.
        let want = hex("00000001 00000000 ffffffdc 00000001 00000000 00000001 00000000 00000000 00000000");
        assert_eq!(addhost_errors(&[-36]), want);
        let req = hex("00000001 00000003 766d0000");
        assert_eq!(parse_addhost(&req).unwrap(), vec!["vm".to_string()]);
        assert!(parse_addhost(&hex("00000005 00000003 766d0000")).is_err());
    }

    #[test]
    fn setopt_pairs_stop_at_garbage() {
        let b = hex("00000001 00000003 34300000 00000002");
        assert_eq!(parse_setopt(&b), vec![(1, "40".to_string())]);
    }
}
