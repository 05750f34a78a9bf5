//! Descriptors of large messages copied from another process's memory, and their acks: the
//! bodies of the pvm-rs extension messages `TC_VMDESC`/`TC_VMACK` (task to task on a direct
//! route) and `TC_VMDESC_PVMD`/`TC_VMACK_PVMD` (between a task and its pvmd-rs daemon).
//! Native-endian: both ends run on one host, with one ABI. See docs/extensions.md.

use crate::codes::{MSGHDR_LEN, SYSCTX_TC};
use crate::frag::{FragFlags, StreamFragHeader};
use crate::mesg::MsgHeader;
use crate::Tid;

/// The largest body a descriptor may announce: the pvm-rs library's limit on one message.
pub const MAX_TOTAL: u64 = 1 << 30;

/// Task -> task on a direct route, ctx SYSCTX_TC: a large message to read from the sender's
/// memory ([`Desc`]).
pub const TC_VMDESC: i32 = 0x8003_0110u32 as i32;
/// Task -> task, ctx SYSCTX_TC: the answer to a [`TC_VMDESC`] ([`Ack`]).
pub const TC_VMACK: i32 = 0x8003_0111u32 as i32;

/// Task -> pvmd (pvmd-rs), ctx SYSCTX_TC, and pvmd -> task: a large message on the daemon
/// route to copy from the writer's shared arena ([`Desc`]; the fragment names the real source
/// and destination). Sent only between a pvmd-rs daemon and libraries that announced
/// `FEAT_ARENA_RELAY` to each other.
pub const TC_VMDESC_PVMD: i32 = 0x8003_0112u32 as i32;
/// Task -> pvmd (pvmd-rs), ctx SYSCTX_TC: the answer to a [`TC_VMDESC_PVMD`] ([`Ack`]). The
/// pvmd answers a task's descriptor with a [`TC_VMACK`] from its own tid.
pub const TC_VMACK_PVMD: i32 = 0x8003_0113u32 as i32;

/// Most pieces a descriptor may list (we send one; the limit keeps a hostile count cheap).
pub const MAX_PIECES: usize = 64;

/// Ack status: the receiver has the message.
pub const ACK_DONE: i32 = 0;
/// Ack status: the receiver could not read it; send it the ordinary way (and from now on).
pub const ACK_INLINE: i32 = 1;

/// Field offsets of a descriptor (native-endian: both ends run on one host, as one ABI).
pub mod off {
    pub const MAGIC: usize = 0;
    pub const NPIECES: usize = 4;
    pub const XID: usize = 8;
    pub const PID: usize = 16;
    pub const ENC: usize = 20;
    pub const TAG: usize = 24;
    pub const CTX: usize = 28;
    pub const WID: usize = 32;
    pub const CRC: usize = 36;
    pub const TOTAL: usize = 40;
    pub const PIECES: usize = 48;
    pub const PIECE_LEN: usize = 16;
    pub const ACK_MAGIC: usize = 0;
    pub const ACK_STATUS: usize = 4;
    pub const ACK_XID: usize = 8;
    pub const ACK_LEN: usize = 16;
}

/// "pvVR", first word of a descriptor.
pub const DESC_MAGIC: u32 = 0x7076_5652;
/// "pvVA", first word of an ack.
pub const ACK_MAGIC: u32 = 0x7076_5641;

/// What is wrong with a descriptor or ack (which field, which value).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DescError {
    #[error("{what}: {got} bytes, need {need}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{what}: magic {got:#x} at offset 0")]
    Magic { what: &'static str, got: u32 },
    #[error("piece count {0} at offset 4: not in 1..={MAX_PIECES}")]
    Pieces(u32),
    #[error("total length {0} at offset 40: larger than the library's message limit")]
    TooLarge(u64),
    #[error("piece {index}: address {addr:#x} + length {len} overflows")]
    Overflow { index: usize, addr: u64, len: u64 },
    #[error("pieces add up to {sum} bytes, the total at offset 40 says {total}")]
    Sum { sum: u64, total: u64 },
    #[error("{0} trailing bytes after the pieces")]
    Trailing(usize),
}

/// A [`TC_VMDESC`] body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    /// Transfer id, echoed by the ack.
    pub xid: u64,
    /// The sender's pid as it sees it (checked against SO_PEERCRED).
    pub pid: i32,
    /// The real message's header.
    pub header: MsgHeader,
    /// Body length: the sum of the pieces.
    pub total: u64,
    /// (address in the sender, length) of each piece of the body, in order.
    pub pieces: Vec<(u64, u64)>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn i32_at(b: &[u8], o: usize) -> i32 {
    u32_at(b, o) as i32
}
/// The native-endian u64 at `o` (the caller checked the length).
pub fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_ne_bytes(a)
}

impl Desc {
    /// Parses a descriptor; never panics, never allocates more than [`MAX_PIECES`] pieces.
    pub fn parse(b: &[u8]) -> Result<Desc, DescError> {
        if b.len() < off::PIECES {
            return Err(DescError::Short {
                what: "descriptor",
                need: off::PIECES,
                got: b.len(),
            });
        }
        let magic = u32_at(b, off::MAGIC);
        if magic != DESC_MAGIC {
            return Err(DescError::Magic {
                what: "descriptor",
                got: magic,
            });
        }
        let n = u32_at(b, off::NPIECES);
        if n == 0 || n as usize > MAX_PIECES {
            return Err(DescError::Pieces(n));
        }
        let need = off::PIECES + n as usize * off::PIECE_LEN;
        if b.len() < need {
            return Err(DescError::Short {
                what: "descriptor pieces",
                need,
                got: b.len(),
            });
        }
        if b.len() > need {
            return Err(DescError::Trailing(b.len() - need));
        }
        let total = u64_at(b, off::TOTAL);
        if total > MAX_TOTAL {
            return Err(DescError::TooLarge(total));
        }
        let mut pieces = Vec::with_capacity(n as usize);
        let mut sum = 0u64;
        for i in 0..n as usize {
            let o = off::PIECES + i * off::PIECE_LEN;
            let (addr, len) = (u64_at(b, o), u64_at(b, o + 8));
            if addr.checked_add(len).is_none() {
                return Err(DescError::Overflow { index: i, addr, len });
            }
            sum = sum.saturating_add(len);
            pieces.push((addr, len));
        }
        if sum != total {
            return Err(DescError::Sum { sum, total });
        }
        Ok(Desc {
            xid: u64_at(b, off::XID),
            pid: i32_at(b, off::PID),
            header: MsgHeader {
                enc: i32_at(b, off::ENC),
                tag: i32_at(b, off::TAG),
                ctx: i32_at(b, off::CTX),
                wid: i32_at(b, off::WID),
                crc: i32_at(b, off::CRC),
            },
            total,
            pieces,
        })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(off::PIECES + self.pieces.len() * off::PIECE_LEN);
        v.extend_from_slice(&DESC_MAGIC.to_ne_bytes());
        v.extend_from_slice(&(self.pieces.len() as u32).to_ne_bytes());
        v.extend_from_slice(&self.xid.to_ne_bytes());
        for x in [
            self.pid,
            self.header.enc,
            self.header.tag,
            self.header.ctx,
            self.header.wid,
            self.header.crc,
        ] {
            v.extend_from_slice(&x.to_ne_bytes());
        }
        v.extend_from_slice(&self.total.to_ne_bytes());
        for (a, l) in &self.pieces {
            v.extend_from_slice(&a.to_ne_bytes());
            v.extend_from_slice(&l.to_ne_bytes());
        }
        v
    }
}

/// A [`TC_VMACK`] body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub xid: u64,
    pub status: i32,
}

impl Ack {
    pub fn parse(b: &[u8]) -> Result<Ack, DescError> {
        if b.len() < off::ACK_LEN {
            return Err(DescError::Short {
                what: "ack",
                need: off::ACK_LEN,
                got: b.len(),
            });
        }
        let magic = u32_at(b, off::ACK_MAGIC);
        if magic != ACK_MAGIC {
            return Err(DescError::Magic {
                what: "ack",
                got: magic,
            });
        }
        if b.len() > off::ACK_LEN {
            return Err(DescError::Trailing(b.len() - off::ACK_LEN));
        }
        Ok(Ack {
            status: i32_at(b, off::ACK_STATUS),
            xid: u64_at(b, off::ACK_XID),
        })
    }

    pub fn emit(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(off::ACK_LEN);
        v.extend_from_slice(&ACK_MAGIC.to_ne_bytes());
        v.extend_from_slice(&self.status.to_ne_bytes());
        v.extend_from_slice(&self.xid.to_ne_bytes());
        v
    }
}

/// One of these messages as a whole stream frame: one fragment (SOM and EOM), context
/// `SYSCTX_TC`, encoding 0, `body` after the message header.
pub fn frame(dst: Tid, src: Tid, tag: i32, body: &[u8]) -> Vec<u8> {
    let fh = StreamFragHeader {
        dst,
        src,
        len: (MSGHDR_LEN + body.len()) as u32,
        flags: FragFlags::SOM | FragFlags::EOM,
    };
    let mh = MsgHeader {
        enc: 0,
        tag,
        ctx: SYSCTX_TC,
        wid: 0,
        crc: 0,
    };
    let mut v = Vec::with_capacity(fh.to_bytes().len() + MSGHDR_LEN + body.len());
    v.extend_from_slice(&fh.to_bytes());
    v.extend_from_slice(&mh.to_bytes());
    v.extend_from_slice(body);
    v
}
