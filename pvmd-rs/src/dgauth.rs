//! Optional authentication of datagrams between pvm-rs daemons (hardening, docs/extensions.md).
//!
//! The legacy protocol trusts any datagram whose source ip:port is a member's; anyone who can
//! forge a source address on the network can inject messages (a DM_HALT, a FIN|ACK). When every
//! pvm-rs daemon of a machine has the same secret key (`$PVMD_KEY_FILE`, default
//! `$HOME/.pvmd-rs-key`, a file of ours with mode 0600), two of them agree through DM_XCAPS to
//! append a truncated HMAC-SHA256 of each datagram, and from then on drop datagrams whose tag
//! does not check. A legacy peer never sees any of it (it ignores DM_XCAPS, so its link stays
//! plain).
//!
//! SHA-256 and HMAC are implemented here (FIPS 180-4, RFC 2104) to keep the dependency tree as
//! it is; the tests use the published vectors.

use std::collections::HashMap;
use std::net::SocketAddrV4;

/// Bytes of HMAC-SHA256 appended to each datagram.
pub const TAG_LEN: usize = 16;

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

fn compress(h: &mut [u32; 8], block: &[u8]) {
    let mut w = [0u32; 64];
    for (i, c) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = hh
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(K[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        hh = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
        *x = x.wrapping_add(y);
    }
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    let mut buf = [0u8; 64];
    let mut fill = 0usize;
    let mut total: u64 = 0;
    for p in parts {
        total += p.len() as u64;
        let mut p: &[u8] = p;
        while !p.is_empty() {
            let n = (64 - fill).min(p.len());
            buf[fill..fill + n].copy_from_slice(&p[..n]);
            fill += n;
            p = &p[n..];
            if fill == 64 {
                compress(&mut h, &buf);
                fill = 0;
            }
        }
    }
    buf[fill] = 0x80;
    buf[fill + 1..].fill(0);
    if fill >= 56 {
        compress(&mut h, &buf);
        buf.fill(0);
    }
    buf[56..].copy_from_slice(&(total * 8).to_be_bytes());
    compress(&mut h, &buf);
    let mut out = [0u8; 32];
    for (o, v) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha256(&[&ipad, msg]);
    sha256(&[&opad, &inner])
}

/// The machine's shared secret.
#[derive(Clone)]
pub struct Key {
    k: Vec<u8>,
    /// Names the key in DM_XCAPS so that daemons with different keys notice (not secret).
    pub id: i32,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key {{ id: {:08x} }}", self.id)
    }
}

impl Key {
    pub fn new(secret: &[u8]) -> Option<Key> {
        if secret.len() < 16 {
            return None;
        }
        let d = sha256(&[b"pvm-rs datagram key id\0", secret]);
        let id = i32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff;
        Some(Key {
            k: secret.to_vec(),
            id: id.max(1),
        })
    }

    /// The key file (`$PVMD_KEY_FILE`, else `$HOME/.pvmd-rs-key`): None if there is none; an
    /// error text if it exists but is unusable (not ours, readable by others, shorter than 16
    /// bytes), so that a misconfiguration is logged instead of silently running unauthenticated.
    pub fn load() -> Result<Option<Key>, String> {
        use std::os::unix::fs::MetadataExt;
        let path = match std::env::var_os("PVMD_KEY_FILE") {
            Some(p) => std::path::PathBuf::from(p),
            None => match std::env::var_os("HOME") {
                Some(h) => std::path::Path::new(&h).join(".pvmd-rs-key"),
                None => return Ok(None),
            },
        };
        let m = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if !m.is_file() || m.uid() != crate::sys::getuid() || m.mode() & 0o077 != 0 {
            return Err(format!("{}: must be a file of ours with mode 0600", path.display()));
        }
        let secret = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Key::new(secret.trim_ascii())
            .map(Some)
            .ok_or_else(|| format!("{}: shorter than 16 bytes", path.display()))
    }

    /// The datagram with its tag appended.
    pub fn seal(&self, dg: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(dg.len() + TAG_LEN);
        v.extend_from_slice(dg);
        v.extend_from_slice(&hmac(&self.k, dg)[..TAG_LEN]);
        v
    }

    /// The datagram without its tag, if the tag checks.
    pub fn open<'a>(&self, dg: &'a [u8]) -> Option<&'a [u8]> {
        let n = dg.len().checked_sub(TAG_LEN)?;
        let want = hmac(&self.k, &dg[..n]);
        // Constant time: every byte compared.
        let diff = want[..TAG_LEN].iter().zip(&dg[n..]).fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then_some(&dg[..n])
    }
}

static MACHINE_KEY: std::sync::OnceLock<Result<Option<Key>, String>> = std::sync::OnceLock::new();

/// The key of this daemon, loaded once ([`Key::load`]), whenever the network side is set up.
pub fn machine_key() -> &'static Result<Option<Key>, String> {
    MACHINE_KEY.get_or_init(Key::load)
}

/// Per-peer state of the authenticated mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We offered it: send plain, accept both; the first datagram that checks makes it Strict.
    Offered,
    /// We accepted the peer's offer: send sealed, accept both until the first that checks.
    Accepted,
    /// Send sealed, accept only sealed.
    Strict,
}

/// The key and the links that use it.
#[derive(Debug, Default)]
pub struct DgAuth {
    pub key: Option<Key>,
    peers: HashMap<SocketAddrV4, Mode>,
}

/// What to do with an incoming datagram.
pub enum Verdict<'a> {
    Pass(&'a [u8]),
    /// Became strict with this datagram.
    NowStrict(&'a [u8]),
    Drop,
}

impl DgAuth {
    pub fn with_key(key: Option<Key>) -> DgAuth {
        DgAuth {
            key,
            peers: HashMap::new(),
        }
    }

    pub fn mode(&self, peer: SocketAddrV4) -> Option<Mode> {
        self.peers.get(&peer).copied()
    }

    pub fn set(&mut self, peer: SocketAddrV4, m: Mode) {
        if self.key.is_some() {
            let cur = self.peers.get(&peer).copied();
            if cur != Some(Mode::Strict) {
                self.peers.insert(peer, m);
            }
        }
    }

    pub fn forget(&mut self, peer: SocketAddrV4) {
        self.peers.remove(&peer);
    }

    pub fn incoming<'a>(&mut self, from: SocketAddrV4, dg: &'a [u8]) -> Verdict<'a> {
        let (Some(k), Some(m)) = (&self.key, self.peers.get(&from).copied()) else {
            return Verdict::Pass(dg);
        };
        match (k.open(dg), m) {
            (Some(inner), Mode::Strict) => Verdict::Pass(inner),
            (Some(inner), _) => {
                self.peers.insert(from, Mode::Strict);
                Verdict::NowStrict(inner)
            }
            (None, Mode::Strict) => Verdict::Drop,
            (None, _) => Verdict::Pass(dg),
        }
    }

    pub fn outgoing(&self, to: SocketAddrV4, dg: Vec<u8>) -> Vec<u8> {
        match (&self.key, self.peers.get(&to)) {
            (Some(k), Some(Mode::Accepted | Mode::Strict)) => k.seal(&dg),
            _ => dg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha256_vectors() {
        assert_eq!(
            hex(&sha256(&[b""])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(&[b"abc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(&[b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"])),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha256(&[&million[..500_001], &million[500_001..]])),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn hmac_rfc4231() {
        assert_eq!(
            hex(&hmac(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn seal_open_and_modes() {
        let k = Key::new(b"0123456789abcdef-secret").unwrap();
        let s = k.seal(b"datagram");
        assert_eq!(k.open(&s), Some(&b"datagram"[..]));
        let mut t = s.clone();
        t[0] ^= 1;
        assert_eq!(k.open(&t), None, "tampered");
        assert_eq!(k.open(b"short"), None);
        let other = Key::new(b"another key of 16+ bytes").unwrap();
        assert_eq!(other.open(&s), None);
        assert!(Key::new(b"too short").is_none());

        let p: SocketAddrV4 = "10.0.0.2:5000".parse().unwrap();
        let mut a = DgAuth {
            key: Some(k.clone()),
            ..Default::default()
        };
        assert!(
            matches!(a.incoming(p, b"plain"), Verdict::Pass(b"plain")),
            "no mode: plain"
        );
        a.set(p, Mode::Offered);
        assert_eq!(a.outgoing(p, b"x".to_vec()), b"x", "offered: still plain out");
        assert!(matches!(a.incoming(p, b"plain"), Verdict::Pass(_)));
        assert!(matches!(a.incoming(p, &s), Verdict::NowStrict(b"datagram")));
        assert_eq!(a.mode(p), Some(Mode::Strict));
        assert!(matches!(a.incoming(p, b"plain"), Verdict::Drop), "strict drops plain");
        assert!(matches!(a.incoming(p, &t), Verdict::Drop), "strict drops tampered");
        assert_eq!(a.outgoing(p, b"x".to_vec()), k.seal(b"x"));
        a.set(p, Mode::Offered);
        assert_eq!(a.mode(p), Some(Mode::Strict), "never downgraded");
    }
}
