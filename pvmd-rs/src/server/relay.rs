//! The local relay fast path: a fragment from one connected task to another on this host is
//! written to the destination by the reader task of the source connection, right after the read
//! that produced it, without going through the main loop.
//!
//! Why: through the main loop a relayed fragment costs a channel send, a wake-up of the
//! runtime's `block_on` future (which tokio's current-thread scheduler precedes with an extra
//! `epoll_wait` that does not block) and a poll of every `select!` arm, all on the latency path
//! of a small message (see docs/bench-daemon.md). Here a relay is one read and one `writev`.
//!
//! The decision stays the daemon's: the main loop records each relay that
//! [`Daemon::relay_target`](crate::daemon::Daemon::relay_target) allowed (source connection and
//! destination tid -> destination connection and rewritten header) in a [`Routes`] table, and a
//! reader uses only what is recorded there. Any daemon state that `relay_target` reads changes
//! only in the main loop, which empties the table whenever it did anything but relay (see
//! `serve_net`), so a recorded route is always what `relay_target` would answer now.
//!
//! Order is kept on every connection: a reader relays by itself only while none of its own
//! earlier input waits in the main loop's queue ([`Pending`]), and writes straight to the
//! socket only while nothing is queued for the destination (otherwise it queues behind).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pvm_proto::frag::{FragFlags, StreamFragHeader};
use pvm_proto::Tid;

use super::{coalesce, Outlet, WriteCmd, MAX_QUEUED};
use crate::conn::FragRef;
use crate::daemon::ConnId;
use std::io::IoSlice;

/// Most routes recorded between two clearings (a bound on memory; past it the main loop simply
/// relays the rest itself).
const MAX_ROUTES: usize = 4096;

/// Events of one connection sent to the main loop and not yet handled by it.
pub type Pending = Arc<AtomicUsize>;

/// Where a reader writes a relayed fragment: the destination connection's output (the same one
/// the main loop writes to).
pub type Dest = Arc<Outlet>;

struct Route {
    /// Tids of the rewritten header.
    dst: Tid,
    src: Tid,
    dest: Dest,
}

/// The relays the daemon allowed since the main loop last changed any state: (source
/// connection, destination tid as the task wrote it) -> route.
#[derive(Default)]
pub struct Routes {
    map: HashMap<(ConnId, u32), Route>,
}

/// The table shared by the main loop and the readers (one thread: the lock is never contended).
pub type SharedRoutes = Arc<Mutex<Routes>>;

impl Routes {
    /// Records that fragments from `conn` to `dst` go to `dest` with header `hdr` (as
    /// `relay_target` answered).
    pub fn learn(&mut self, conn: ConnId, dst: Tid, hdr: &[u8; 16], dest: Dest) {
        if self.map.len() >= MAX_ROUTES {
            return;
        }
        let Ok(h) = StreamFragHeader::parse(hdr, u32::MAX) else {
            return;
        };
        self.map.insert(
            (conn, dst.bits()),
            Route {
                dst: h.dst,
                src: h.src,
                dest,
            },
        );
    }

    /// Forgets every route: the daemon may decide differently now.
    pub fn clear(&mut self) {
        if !self.map.is_empty() {
            self.map.clear();
        }
    }

    /// Relays the leading fragments of `frags` (still in the reader's buffer) that have a
    /// route, in order; returns how many went. The rest (from the first one without a route,
    /// or whose destination has a backlog) is for the main loop.
    pub fn relay(&self, conn: ConnId, pending: &Pending, frags: &[FragRef<'_>]) -> usize {
        if pending.load(Ordering::Relaxed) != 0 || self.map.is_empty() {
            return 0;
        }
        let mut done = 0;
        // A transfer frame of the arena relay (arelay.rs) is the main loop's.
        let route = |f: &FragRef<'_>| {
            self.route(conn, &f.0)
                .filter(|_| super::arelay::transfer_tag(&f.0, f.1).is_none())
        };
        while done < frags.len() {
            let Some(r) = route(&frags[done]) else {
                break;
            };
            // The run of fragments that go to the same destination.
            let mut end = done + 1;
            while end < frags.len() && route(&frags[end]).is_some_and(|s| std::ptr::eq(s, r)) {
                end += 1;
            }
            for (h, _) in &frags[done..end] {
                crate::metrics::frag_in(h.flags.contains(FragFlags::EOM)); // metrics.rs
            }
            // coalesce.rs: the fragments of one message go out as one.
            let sizes: Vec<(FragFlags, u32)> = frags[done..end].iter().map(|(h, _)| (h.flags, h.len)).collect();
            let groups = coalesce::plan(&sizes, coalesce::MAX_RUN, coalesce::MAX_LEN);
            let hdrs: Vec<[u8; 16]> = groups
                .iter()
                .map(|g| {
                    StreamFragHeader {
                        dst: r.dst,
                        src: r.src,
                        len: g.len,
                        flags: g.flags,
                    }
                    .to_bytes()
                })
                .collect();
            let mut pieces: Vec<&[u8]> = Vec::with_capacity(groups.len() + end - done);
            for (g, h) in groups.iter().zip(&hdrs) {
                pieces.push(h);
                pieces.extend(frags[done + g.frags.start..done + g.frags.end].iter().map(|(_, p)| *p));
            }
            send(&r.dest, &pieces);
            // spin.rs: spin after a message's end (its answer may come soon); not while a
            // long message streams through (its next fragments come anyway).
            if frags[end - 1].0.flags.contains(FragFlags::EOM) {
                super::spin::touch();
            } else {
                super::spin::rest();
            }
            done = end;
        }
        done
    }

    /// A big fragment (conn.rs `BIG`) of `conn` that the reader may pass on by itself
    /// (splice.rs): the destination and the rewritten header, with the destination claimed (its
    /// queue counter raised from zero to one; the caller puts a `WriteCmd::Wait` in its queue).
    /// `None` when relay() would not relay it: no route, earlier input of the connection
    /// waiting in the main loop, or something queued for the destination.
    pub fn claim_big(&self, conn: ConnId, pending: &Pending, h: &StreamFragHeader) -> Option<(Dest, [u8; 16])> {
        if pending.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let r = self.map.get(&(conn, h.dst.bits()))?;
        r.dest
            .queued()
            .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        crate::metrics::frag_in(h.flags.contains(FragFlags::EOM)); // metrics.rs
        crate::metrics::FRAGS_OUT.inc(); // metrics.rs
        let hdr = StreamFragHeader {
            dst: r.dst,
            src: r.src,
            len: h.len,
            flags: h.flags & (FragFlags::SOM | FragFlags::EOM),
        };
        Some((r.dest.clone(), hdr.to_bytes()))
    }

    /// The route of a fragment, if it may be relayed here now.
    fn route(&self, conn: ConnId, h: &StreamFragHeader) -> Option<&Route> {
        let r = self.map.get(&(conn, h.dst.bits()))?;
        // A destination with a backlog goes through the main loop, which drops it if it is
        // not reading (MAX_QUEUED).
        (r.dest.queued().load(Ordering::Relaxed) <= MAX_QUEUED / 2).then_some(r)
    }
}

/// Most slices one `writev` is given (the kernel's IOV_MAX is 1024).
const MAX_IOV: usize = 512;

/// Writes relayed bytes (headers and payloads, in stream order) as the main loop's `enqueue`
/// does: straight to the socket with `writev` when nothing is queued for it; what the socket did
/// not take (or everything, behind what is queued) copied into one buffer for the writer task.
fn send(dest: &Dest, pieces: &[&[u8]]) {
    crate::metrics::FRAGS_OUT.inc(); // metrics.rs
    let mut skip = 0usize; // bytes of `pieces` written
    if dest.idle() {
        for batch in pieces.chunks(MAX_IOV) {
            let iov: Vec<IoSlice<'_>> = batch.iter().map(|p| IoSlice::new(p)).collect();
            let want: usize = batch.iter().map(|p| p.len()).sum();
            // WouldBlock, or an error the writer task will meet and end on, count as nothing.
            let n = dest.wr().try_write_vectored(&iov).unwrap_or_default();
            skip += n;
            if n < want {
                break;
            }
        }
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    if skip == total {
        return;
    }
    let mut rest = Vec::with_capacity(total - skip);
    for piece in pieces {
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        rest.extend_from_slice(&piece[skip..]);
        skip = 0;
    }
    dest.queued().fetch_add(rest.len(), Ordering::Relaxed);
    dest.send(WriteCmd::Data(rest));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    fn hdr(dst: Tid, len: usize, flags: FragFlags) -> StreamFragHeader {
        StreamFragHeader {
            dst,
            src: Tid(0),
            len: len as u32,
            flags,
        }
    }

    /// A destination connection: its `Dest`, the peer's end, and the writer queue.
    async fn dest() -> (Dest, tokio::net::UnixStream, mpsc::UnboundedReceiver<WriteCmd>) {
        let (ours, peer) = tokio::net::UnixStream::pair().unwrap();
        let (rd, wr) = super::super::tasksock::split(ours).unwrap();
        std::mem::forget(rd); // keep the socket open in both directions
        let (d, rx) = Outlet::with_queue(wr, 0);
        (d, peer, rx)
    }

    use crate::server::test_rt as rt;

    #[test]
    fn relays_known_routes_in_order_and_stops_at_the_first_unknown() {
        rt().block_on(async {
            let (d, mut peer, mut rx) = dest().await;
            let b = Tid::task(1, 2);
            let rewritten = hdr(Tid::task(1, 2), 0, FragFlags::empty());
            let mut routes = Routes::default();
            let hdr_bytes = StreamFragHeader {
                src: Tid::task(1, 1),
                ..rewritten
            }
            .to_bytes();
            routes.learn(7, b, &hdr_bytes, d);
            let pending = Pending::default();
            let frags = [
                (hdr(b, 3, FragFlags::SOM), &b"abc"[..]),
                (hdr(b, 2, FragFlags::EOM), &b"de"[..]),
                (hdr(Tid::task(1, 9), 1, FragFlags::SOM | FragFlags::EOM), &b"x"[..]),
                (hdr(b, 1, FragFlags::SOM | FragFlags::EOM), &b"y"[..]),
            ];
            assert_eq!(routes.relay(7, &pending, &frags), 2);
            // Another connection has no route to b.
            assert_eq!(routes.relay(8, &pending, &frags), 0);
            // coalesce.rs: the two fragments of the message went out as one.
            let mut got = vec![0u8; 16 + 5];
            peer.read_exact(&mut got).await.unwrap();
            let h1 = StreamFragHeader::parse(&got[..16], u32::MAX).unwrap();
            assert_eq!(
                (h1.src, h1.dst, h1.len, h1.flags),
                (Tid::task(1, 1), b, 5, FragFlags::SOM | FragFlags::EOM)
            );
            assert_eq!(&got[16..], b"abcde");
            let mut more = [0u8; 1];
            assert!(peer.try_read(&mut more).is_err(), "nothing else written");
            assert!(rx.try_recv().is_err(), "written directly, nothing queued");
        });
    }

    #[test]
    fn waits_for_pending_input_and_queues_behind_a_backlog() {
        rt().block_on(async {
            let (d, _peer, mut rx) = dest().await;
            let out = d.clone();
            let queued = out.queued();
            let b = Tid::task(1, 2);
            let mut routes = Routes::default();
            routes.learn(7, b, &hdr(b, 0, FragFlags::empty()).to_bytes(), d);
            let frags = [(hdr(b, 3, FragFlags::SOM | FragFlags::EOM), &b"abc"[..])];
            let pending = Pending::new(AtomicUsize::new(1));
            assert_eq!(
                routes.relay(7, &pending, &frags),
                0,
                "earlier input of this connection waits"
            );
            pending.store(0, Ordering::Relaxed);
            queued.store(100, Ordering::Relaxed);
            assert_eq!(routes.relay(7, &pending, &frags), 1);
            match rx.try_recv() {
                Ok(WriteCmd::Data(v)) => assert_eq!((v.len(), &v[16..]), (19, &b"abc"[..])),
                _ => panic!("expected the fragment behind the backlog"),
            }
            assert_eq!(queued.load(Ordering::Relaxed), 119);
            queued.store(MAX_QUEUED, Ordering::Relaxed);
            assert_eq!(
                routes.relay(7, &pending, &frags),
                0,
                "a big backlog goes to the main loop"
            );
            queued.store(0, Ordering::Relaxed);
            routes.clear();
            assert_eq!(routes.relay(7, &pending, &frags), 0, "forgotten");
        });
    }

    /// Reads everything `peer` has now, as (header, payload) pairs.
    async fn frags_of(peer: &mut tokio::net::UnixStream, bytes: usize) -> Vec<(StreamFragHeader, Vec<u8>)> {
        let mut got = vec![0u8; bytes];
        peer.read_exact(&mut got).await.unwrap();
        let mut more = [0u8; 1];
        assert!(peer.try_read(&mut more).is_err(), "more than expected written");
        let mut out = Vec::new();
        let mut p = &got[..];
        while !p.is_empty() {
            let h = StreamFragHeader::parse(p, u32::MAX).unwrap();
            let end = 16 + h.len as usize;
            out.push((h, p[16..end].to_vec()));
            p = &p[end..];
        }
        out
    }

    #[test]
    fn coalesces_per_message_and_destination_and_bounds_the_run() {
        rt().block_on(async {
            let (db, mut pb, mut rxb) = dest().await;
            let (dc, mut pc, mut rxc) = dest().await;
            let (a, b, c) = (Tid::task(1, 1), Tid::task(1, 2), Tid::task(1, 3));
            let mut routes = Routes::default();
            let learned = |dst: Tid| {
                StreamFragHeader {
                    dst,
                    src: a,
                    len: 0,
                    flags: FragFlags::empty(),
                }
                .to_bytes()
            };
            routes.learn(7, b, &learned(b), db);
            routes.learn(7, c, &learned(c), dc);
            let (s, e, n) = (FragFlags::SOM, FragFlags::EOM, FragFlags::empty());
            let frags = [
                (hdr(b, 2, s), &b"ab"[..]),
                (hdr(b, 2, n), &b"cd"[..]),
                (hdr(b, 1, e), &b"e"[..]),
                (hdr(b, 1, s | e), &b"f"[..]),
                (hdr(c, 2, s), &b"gh"[..]),
                (hdr(c, 1, e), &b"i"[..]),
                (hdr(b, 1, s), &b"j"[..]),
                (hdr(b, 1, e), &b"k"[..]),
            ];
            assert_eq!(routes.relay(7, &Pending::default(), &frags), frags.len());
            let got: Vec<_> = frags_of(&mut pb, 3 * 16 + 8)
                .await
                .into_iter()
                .map(|(h, p)| (h.src, h.dst, h.flags, p))
                .collect();
            assert_eq!(
                got,
                [
                    (a, b, s | e, b"abcde".to_vec()),
                    (a, b, s | e, b"f".to_vec()),
                    (a, b, s | e, b"jk".to_vec()),
                ]
            );
            let got: Vec<_> = frags_of(&mut pc, 16 + 3)
                .await
                .into_iter()
                .map(|(h, p)| (h.dst, h.flags, p))
                .collect();
            assert_eq!(got, [(c, s | e, b"ghi".to_vec())]);

            // A long message: runs of at most MAX_RUN fragments.
            let total = coalesce::MAX_RUN + 44;
            let payload: Vec<u8> = (0..total).map(|i| i as u8).collect();
            let long: Vec<FragRef<'_>> = (0..total)
                .map(|i| {
                    let f = if i == 0 {
                        s
                    } else if i == total - 1 {
                        e
                    } else {
                        n
                    };
                    (hdr(b, 1, f), &payload[i..i + 1])
                })
                .collect();
            assert_eq!(routes.relay(7, &Pending::default(), &long), total);
            let got = frags_of(&mut pb, 2 * 16 + total).await;
            assert_eq!(got.len(), 2);
            assert_eq!((got[0].0.len as usize, got[0].0.flags), (coalesce::MAX_RUN, s));
            assert_eq!((got[1].0.len, got[1].0.flags), (44, e));
            assert_eq!([&got[0].1[..], &got[1].1[..]].concat(), payload);
            assert!(rxb.try_recv().is_err() && rxc.try_recv().is_err(), "nothing queued");
        });
    }
}
