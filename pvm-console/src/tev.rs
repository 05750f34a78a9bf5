//! Legacy trace events (pvmtev.h format) as the legacy library sends them to a tracer.
//!
//! A trace message (encoding XDR) holds markers and records: `EVENT_DESC` (-5) starts the
//! first record of an event kind and carries, per datum, its data id and type so later raw
//! records (`EVENT_RECORD`, -7) can be read with only the values; `EVENT_BUFFER` (-1) marks a
//! buffered batch. Every record starts with three ints: seconds, microseconds, task id.
//! The decoder keeps the descriptors across messages, bounded by the number of event kinds.

use std::collections::HashMap;
use std::fmt;

pub const MARK_EVENT_BUFFER: i32 = -1;
pub const MARK_EVENT_BUFFER_END: i32 = -2;
pub const MARK_DATA_ID: i32 = -3;
pub const MARK_DATA_ID_END: i32 = -4;
pub const MARK_EVENT_DESC: i32 = -5;
pub const MARK_EVENT_DESC_END: i32 = -6;
pub const MARK_EVENT_RECORD: i32 = -7;
pub const MARK_EVENT_RECORD_END: i32 = -8;
pub const MARK_USER_EVENT_RECORD: i32 = -9;
pub const MARK_USER_EVENT_RECORD_END: i32 = -10;

pub const EVENT_ENTRY: i32 = 0x4000;
pub const EVENT_EXIT: i32 = 0x8000;
const DATA_ARRAY: i32 = 0x80;
/// Upper bound on array lengths and strings in a trace record (the library caps messages far
/// below this; anything larger is a corrupt stream, not data).
const MAX_ITEMS: usize = 1 << 20;

/// The events traced by default (the legacy console's initial child trace mask): what a
/// space-time diagram needs.
pub const DEFAULT_EVENTS: &[&str] = &[
    "addmhf",
    "barrier",
    "bcast",
    "delmhf",
    "exit",
    "joingroup",
    "kill",
    "lvgroup",
    "mcast",
    "mhf_invoke",
    "migrate",
    "checkpoint",
    "restart",
    "mytid",
    "nrecv",
    "parent",
    "precv",
    "probe",
    "psend",
    "recv",
    "recvf",
    "send",
    "sendsig",
    "siblings",
    "spawn",
    "trecv",
    "user_defined",
];

/// The pvm-rs event kinds beyond the legacy TEV_MAX (108), emitted by our library's
/// pvm_migrate, pvm_checkpoint and pvm_restart (docs/tracing.md). A legacy library's
/// `pvmtevinfo` table does not name them; their descriptors do.
pub const EXT_EVENTS: &[(usize, &str)] = &[(120, "migrate"), (121, "checkpoint"), (122, "restart")];

/// `names` (a library's `pvmtevinfo` names, indexed by event number) extended with
/// [`EXT_EVENTS`], so masks and the decoder know them whichever library is loaded.
pub fn with_extensions(mut names: Vec<String>) -> Vec<String> {
    for (k, n) in EXT_EVENTS {
        if names.len() <= *k {
            names.resize(*k + 1, String::new());
        }
        if names[*k].is_empty() {
            names[*k] = n.to_string();
        }
    }
    names
}

/// A 35-character trace mask with the named events set (`names` indexed by event number).
pub fn mask_of(names: &[String], events: &[&str]) -> String {
    let mut m = vec![b'@'; 35];
    for (i, n) in names.iter().enumerate() {
        if events.contains(&n.as_str()) {
            crate::format::tmask_set(&mut m, i, true);
        }
    }
    String::from_utf8_lossy(&m).into_owned()
}

/// Typed reads from one received message.
pub trait Unpack {
    fn int(&mut self) -> Result<i32, i32>;
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, i32>;
    fn doubles(&mut self, n: usize) -> Result<Vec<f64>, i32>;
    fn floats(&mut self, n: usize) -> Result<Vec<f32>, i32>;
    fn longs(&mut self, n: usize) -> Result<Vec<i64>, i32>;
    fn shorts(&mut self, n: usize) -> Result<Vec<i16>, i32>;
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub sec: i64,
    pub usec: i64,
    pub tid: i32,
    /// Event name (`send`, `recv`, `newtask`…).
    pub name: String,
    /// `entry`, `exit` or `-` (pvmd events carry neither flag).
    pub phase: &'static str,
    /// (data id name, value as text); arrays are comma-separated.
    pub data: Vec<(String, String)>,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06} t{:x} {} {}",
            self.sec, self.usec, self.tid, self.name, self.phase
        )?;
        for (k, v) in &self.data {
            write!(f, " {k}={}", escape(v))?;
        }
        Ok(())
    }
}

fn escape(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_whitespace() || c == '%' {
                format!("%{:02x}", c as u32 & 0xff)
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            // Bytes, not a str slice: the two bytes after `%` may split a UTF-8 character.
            if let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Event {
    pub fn get(&self, did: &str) -> Option<&str> {
        self.data.iter().find(|(k, _)| k == did).map(|(_, v)| v.as_str())
    }
    pub fn int(&self, did: &str) -> Option<i64> {
        self.get(did).and_then(|s| s.parse().ok())
    }
    pub fn time_us(&self) -> i64 {
        self.sec * 1_000_000 + self.usec
    }

    /// Parses a line written by `Display` (the collector's file format).
    pub fn parse(line: &str) -> Option<Event> {
        let mut w = line.split_whitespace();
        let (s, u) = w.next()?.split_once('.')?;
        let tid = u32::from_str_radix(w.next()?.strip_prefix('t')?, 16).ok()? as i32;
        let name = w.next()?.to_string();
        let phase = match w.next()? {
            "entry" => "entry",
            "exit" => "exit",
            _ => "-",
        };
        let data = w
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), unescape(v)))
            .collect();
        Some(Event {
            sec: s.parse().ok()?,
            usec: u.parse().ok()?,
            tid,
            name,
            phase,
            data,
        })
    }
}

/// Decoder state: the descriptors seen so far, per event id (with its entry/exit flag).
#[derive(Default)]
pub struct Decoder {
    desc: HashMap<i32, Vec<(i32, i32)>>,
    names: Vec<String>,
    /// Names carried by descriptors, for event ids `names` does not know (bounded like `desc`).
    desc_names: HashMap<usize, String>,
    dids: Vec<String>,
    /// Sender of the message being decoded: user-defined records carry no task id.
    source: i32,
}

#[derive(Debug, PartialEq)]
pub enum TevError {
    /// The library refused an unpack (end of message or wrong type), with its code.
    Unpack(i32),
    Corrupt(&'static str),
}

impl From<i32> for TevError {
    fn from(c: i32) -> Self {
        TevError::Unpack(c)
    }
}

impl Decoder {
    pub fn new(names: Vec<String>, dids: Vec<String>) -> Self {
        Decoder {
            desc: HashMap::new(),
            names,
            desc_names: HashMap::new(),
            dids,
            source: 0,
        }
    }

    /// The task that sent the next message (for user-defined records, which carry no tid).
    pub fn set_source(&mut self, tid: i32) {
        self.source = tid;
    }

    fn event_name(&self, id: i32) -> String {
        let k = (id & !(EVENT_ENTRY | EVENT_EXIT)) as usize;
        self.names
            .get(k)
            .filter(|n| !n.is_empty())
            .or_else(|| self.desc_names.get(&k))
            .cloned()
            .unwrap_or_else(|| format!("ev{k}"))
    }

    fn did_name(&self, did: i32) -> String {
        usize::try_from(did)
            .ok()
            .and_then(|d| self.dids.get(d))
            .cloned()
            .unwrap_or_else(|| format!("D{did}"))
    }

    /// Decodes every event of one message. Stops quietly at the end of the message.
    pub fn message(&mut self, u: &mut impl Unpack) -> Vec<Event> {
        let mut evs = Vec::new();
        // Bounded: every iteration consumes at least one int or ends.
        while let Ok(mark) = u.int() {
            match mark {
                MARK_EVENT_DESC => match self.record(u, true) {
                    Ok(e) => evs.push(e),
                    Err(_) => break,
                },
                MARK_EVENT_RECORD => match self.record(u, false) {
                    Ok(e) => evs.push(e),
                    Err(_) => break,
                },
                MARK_USER_EVENT_RECORD => match self.user_record(u) {
                    Ok(e) => evs.push(e),
                    Err(_) => break,
                },
                MARK_EVENT_BUFFER | MARK_EVENT_BUFFER_END | MARK_EVENT_DESC_END | MARK_EVENT_RECORD_END => {}
                _ => break,
            }
        }
        evs
    }

    /// A user-defined record (a PvmDataTrace buffer): event id, name, time, then typed items
    /// (type, count for arrays, values) and negative user markers, up to its end marker. The
    /// items are named U0, U1, ... and markers M.
    fn user_record(&mut self, u: &mut impl Unpack) -> Result<Event, TevError> {
        let id = u.int()?;
        let n = u.int()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ITEMS)
            .ok_or(TevError::Corrupt("name length"))?;
        let _name = u.bytes(n)?;
        let (sec, usec) = (u.int()?, u.int()?);
        let mut data = Vec::new();
        // Bounded: every item consumes at least one int.
        loop {
            let t = u.int()?;
            if t == MARK_USER_EVENT_RECORD_END {
                break;
            }
            if t < 0 {
                data.push(("M".to_string(), t.to_string()));
                continue;
            }
            let v = read_value(u, t)?;
            data.push((format!("U{}", data.len()), v));
        }
        Ok(Event {
            sec: sec.into(),
            usec: usec.into(),
            tid: self.source,
            name: self.event_name(id),
            phase: "-",
            data,
        })
    }

    fn record(&mut self, u: &mut impl Unpack, desc: bool) -> Result<Event, TevError> {
        let id = u.int()?;
        if desc {
            let n = u.int()?;
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_ITEMS)
                .ok_or(TevError::Corrupt("name length"))?;
            let name = u.bytes(n)?;
            // Kept for ids the library's table lacks (another implementation's extensions):
            // printable ASCII without the NUL, at most 64 bytes, one per id.
            let k = (id & !(EVENT_ENTRY | EVENT_EXIT)) as usize;
            let name: String = name
                .iter()
                .take_while(|&&b| b != 0)
                .take(64)
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '_' })
                .collect();
            if !name.is_empty() && self.desc_names.len() < 4 * 109 {
                self.desc_names.entry(k).or_insert(name);
            }
        }
        let mut data = Vec::new();
        let mut layout = Vec::new();
        let known = if desc {
            None
        } else {
            Some(self.desc.get(&id).cloned().ok_or(TevError::Corrupt("no descriptor"))?)
        };
        let mut idx = 0;
        loop {
            let (did, ty) = match &known {
                Some(l) => match l.get(idx) {
                    Some(x) => *x,
                    None => break,
                },
                None => {
                    let did = u.int()?;
                    if did < 0 {
                        // The end marker of the descriptor record.
                        break;
                    }
                    (did, u.int()?)
                }
            };
            idx += 1;
            layout.push((did, ty));
            let v = read_value(u, ty)?;
            data.push((self.did_name(did), v));
        }
        if desc {
            if self.desc.len() > 4 * 109 {
                return Err(TevError::Corrupt("too many descriptors"));
            }
            self.desc.insert(id, layout);
        } else {
            // Raw records end with their own marker.
            let m = u.int()?;
            if m != MARK_EVENT_RECORD_END {
                return Err(TevError::Corrupt("record end"));
            }
        }
        let take = |i: usize| {
            data.get(i)
                .and_then(|(_, v): &(String, String)| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let (sec, usec, tid) = (take(0), take(1), take(2) as i32);
        let phase = if id & EVENT_ENTRY != 0 {
            "entry"
        } else if id & EVENT_EXIT != 0 {
            "exit"
        } else {
            "-"
        };
        let rest = data.into_iter().skip(3).collect();
        Ok(Event {
            sec,
            usec,
            tid,
            name: self.event_name(id),
            phase,
            data: rest,
        })
    }
}

fn read_value(u: &mut impl Unpack, ty: i32) -> Result<String, TevError> {
    let array = ty & DATA_ARRAY != 0;
    let base = ty & !DATA_ARRAY;
    let n = if array {
        let n = u.int()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ITEMS)
            .ok_or(TevError::Corrupt("array length"))?
    } else {
        1
    };
    let join = |v: Vec<String>| v.join(",");
    Ok(match base {
        0 => String::new(),
        1 => {
            let b = u.bytes(n)?;
            join(b.iter().map(|x| x.to_string()).collect())
        }
        2 => join(u.floats(2 * n)?.iter().map(|x| x.to_string()).collect()),
        3 => join(u.doubles(2 * n)?.iter().map(|x| x.to_string()).collect()),
        4 => join(u.doubles(n)?.iter().map(|x| x.to_string()).collect()),
        5 => join(u.floats(n)?.iter().map(|x| x.to_string()).collect()),
        6 | 7 => {
            let mut v = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                v.push(u.int()?.to_string());
            }
            join(v)
        }
        8 | 9 => join(u.longs(n)?.iter().map(|x| x.to_string()).collect()),
        10 | 11 => join(u.shorts(n)?.iter().map(|x| x.to_string()).collect()),
        12 => {
            let mut v = Vec::new();
            for _ in 0..n {
                let l = u.int()?;
                let l = usize::try_from(l)
                    .ok()
                    .filter(|&l| l <= MAX_ITEMS)
                    .ok_or(TevError::Corrupt("string length"))?;
                let b = u.bytes(l)?;
                v.push(String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(&b)).into_owned());
            }
            join(v)
        }
        _ => String::new(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A message as a list of typed items, standing in for a received XDR buffer.
    pub struct Fake(pub std::collections::VecDeque<Item>);
    #[derive(Clone)]
    pub enum Item {
        I(i32),
        B(Vec<u8>),
    }
    impl Unpack for Fake {
        fn int(&mut self) -> Result<i32, i32> {
            match self.0.pop_front() {
                Some(Item::I(v)) => Ok(v),
                _ => Err(-2),
            }
        }
        fn bytes(&mut self, n: usize) -> Result<Vec<u8>, i32> {
            match self.0.pop_front() {
                Some(Item::B(v)) if v.len() == n => Ok(v),
                _ => Err(-2),
            }
        }
        fn doubles(&mut self, _: usize) -> Result<Vec<f64>, i32> {
            Err(-2)
        }
        fn floats(&mut self, _: usize) -> Result<Vec<f32>, i32> {
            Err(-2)
        }
        fn longs(&mut self, _: usize) -> Result<Vec<i64>, i32> {
            Err(-2)
        }
        fn shorts(&mut self, _: usize) -> Result<Vec<i16>, i32> {
            Err(-2)
        }
    }

    fn names() -> (Vec<String>, Vec<String>) {
        let mut n = vec![String::new(); 109];
        n[47] = "send".into();
        let mut d = vec![String::new(); 123];
        d[106] = "TS".into();
        d[107] = "TU".into();
        d[88] = "TID".into();
        d[50] = "DST".into();
        d[45] = "MC".into();
        (n, d)
    }

    #[test]
    fn user_defined_record_takes_the_message_source() {
        use Item::*;
        let (mut n, d) = names();
        n[108] = "user_defined".into();
        let mut dec = Decoder::new(n, d);
        dec.set_source(0x40005);
        let m = vec![
            I(MARK_USER_EVENT_RECORD),
            I(108),
            I(13),
            B(b"user_defined\0".to_vec()),
            I(200),
            I(7),
            I(6),
            I(5),
            I(6 | DATA_ARRAY),
            I(2),
            I(1),
            I(2),
            I(-77),
            I(1 | DATA_ARRAY),
            I(2),
            B(b"hi".to_vec()),
            I(MARK_USER_EVENT_RECORD_END),
        ];
        let ev = dec.message(&mut Fake(m.into()));
        assert_eq!(ev.len(), 1);
        assert_eq!(
            ev[0].to_string(),
            "200.000007 t40005 user_defined - U0=5 U1=1,2 M=-77 U3=104,105"
        );
        // A record cut short decodes to nothing rather than something wrong.
        let cut = vec![I(MARK_USER_EVENT_RECORD), I(108), I(13)];
        assert!(dec.message(&mut Fake(cut.into())).is_empty());
    }

    #[test]
    fn unknown_event_ids_take_their_name_from_the_descriptor() {
        use Item::*;
        let (n, mut d) = names();
        d[94] = "TT".into();
        let mut dec = Decoder::new(n, d);
        // Event 121 entry: unknown to a legacy library's table; named by its descriptor.
        let m = vec![
            I(MARK_EVENT_DESC),
            I(121 | EVENT_ENTRY),
            I(11),
            B(b"checkpoint\0".to_vec()),
            I(106),
            I(6),
            I(10),
            I(107),
            I(6),
            I(0),
            I(88),
            I(6),
            I(0x40001),
            I(94),
            I(6),
            I(0x40002),
            I(MARK_EVENT_DESC_END),
            I(MARK_EVENT_RECORD),
            I(121 | EVENT_ENTRY),
            I(11),
            I(0),
            I(0x40001),
            I(0x40003),
            I(MARK_EVENT_RECORD_END),
        ];
        let ev = dec.message(&mut Fake(m.into()));
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].to_string(), "10.000000 t40001 checkpoint entry TT=262146");
        assert_eq!(ev[1].to_string(), "11.000000 t40001 checkpoint entry TT=262147");
        // The extension table names them without a descriptor, for masks.
        let names = with_extensions(vec!["x".into(); 109]);
        assert_eq!(names[120], "migrate");
        assert_eq!(names[122], "restart");
        assert!(names[110].is_empty());
        let m = mask_of(&names, &["checkpoint"]);
        assert_eq!(m.len(), 35);
        assert_eq!(m.as_bytes()[30], b'@' + 2, "bit 121 = character 30, bit 1");
    }

    #[test]
    fn descriptor_then_raw_record() {
        use Item::*;
        let (n, d) = names();
        let mut dec = Decoder::new(n, d);
        let id = 47 | EVENT_EXIT;
        let m1 = vec![
            I(MARK_EVENT_DESC),
            I(id),
            I(5),
            B(b"send\0".to_vec()),
            I(106),
            I(6),
            I(100),
            I(107),
            I(6),
            I(5),
            I(88),
            I(6),
            I(0x40001),
            I(50),
            I(6),
            I(0x40002),
            I(45),
            I(6),
            I(7),
            I(MARK_EVENT_DESC_END),
        ];
        let ev = dec.message(&mut Fake(m1.into()));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].to_string(), "100.000005 t40001 send exit DST=262146 MC=7");
        let m2 = vec![
            I(MARK_EVENT_RECORD),
            I(id),
            I(101),
            I(0),
            I(0x40001),
            I(0x40003),
            I(8),
            I(MARK_EVENT_RECORD_END),
        ];
        let ev = dec.message(&mut Fake(m2.into()));
        assert_eq!(ev[0].int("DST"), Some(0x40003));
        assert_eq!(ev[0].time_us(), 101_000_000);
        assert_eq!(Event::parse(&ev[0].to_string()).as_ref(), Some(&ev[0]));
        // A raw record of an unknown kind ends decoding without panicking.
        let m3 = vec![I(MARK_EVENT_RECORD), I(48), I(1)];
        assert!(dec.message(&mut Fake(m3.into())).is_empty());
        // A hostile array length is refused before allocating.
        let m4 = vec![
            I(MARK_EVENT_DESC),
            I(46),
            I(1),
            B(vec![0]),
            I(106),
            I(0x86),
            I(i32::MAX),
        ];
        assert!(dec.message(&mut Fake(m4.into())).is_empty());
    }

    #[test]
    fn text_round_trip_escapes() {
        let e = Event {
            sec: 1,
            usec: 2,
            tid: 0x40001,
            name: "newtask".into(),
            phase: "-",
            data: vec![("TN".into(), "a b%c".into())],
        };
        let s = e.to_string();
        assert_eq!(s, "1.000002 t40001 newtask - TN=a%20b%25c");
        assert_eq!(Event::parse(&s), Some(e));
        assert_eq!(Event::parse("garbage"), None);
        // Hostile lines never panic (a `%` before a multi-byte character).
        assert!(Event::parse("1.0 t1 x - A=%\u{e9}\u{e9}").is_some());
    }
}
