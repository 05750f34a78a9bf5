//! The output side of a task connection, shared by the main loop and the relaying readers.
//!
//! Most writes go straight to the socket (nothing queued: the runtime is single-threaded, so
//! nobody else is writing). Only what the socket does not take is queued, for a writer task that
//! waits for room. An idle task never needs that task or its queue, and with a thousand connected
//! tasks they were most of the daemon's memory (a task and a queue block of ~3.5 KB each), so both
//! are made on the first write that has to wait, and kept from then on.
//!
//! The writer holds the outlet while it runs and the outlet holds the writer's queue; the cycle
//! ends when the queue is closed ([`Outlet::close`]), which the connection's handle does when it
//! is dropped, whatever the path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::tasksock::TaskWrite;
use super::WriteCmd;

pub struct Outlet {
    wr: TaskWrite,
    /// Bytes handed to the writer and not yet written (a `WriteCmd::Wait` counts one).
    queued: AtomicUsize,
    writer: Mutex<Writer>,
}

enum Writer {
    /// Nothing had to wait yet.
    None,
    Running(mpsc::UnboundedSender<WriteCmd>, Option<AbortHandle>),
    /// Closed or aborted: what comes now is dropped.
    Closed,
}

impl Outlet {
    pub fn new(wr: TaskWrite) -> Arc<Outlet> {
        Arc::new(Outlet {
            wr,
            queued: AtomicUsize::new(0),
            writer: Mutex::new(Writer::None),
        })
    }

    /// An outlet whose queue is the returned receiver instead of a writer task (tests look at
    /// what was queued).
    #[cfg(test)]
    pub fn with_queue(wr: TaskWrite, queued: usize) -> (Arc<Outlet>, mpsc::UnboundedReceiver<WriteCmd>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let o = Arc::new(Outlet {
            wr,
            queued: AtomicUsize::new(queued),
            writer: Mutex::new(Writer::Running(tx, None)),
        });
        (o, rx)
    }

    pub fn wr(&self) -> &TaskWrite {
        &self.wr
    }

    pub fn queued(&self) -> &AtomicUsize {
        &self.queued
    }

    /// True while nothing is queued: a write may go straight to the socket.
    pub fn idle(&self) -> bool {
        self.queued.load(Ordering::Relaxed) == 0
    }

    /// Queues `cmd` behind what is queued, starting the writer task on first use (inside the
    /// runtime); false if the outlet is closed (`cmd` is dropped). The caller has counted
    /// `cmd` in [`Outlet::queued`].
    pub fn send(self: &Arc<Self>, cmd: WriteCmd) -> bool {
        let mut w = self.lock();
        if let Writer::None = *w {
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(super::write_loop(self.clone(), rx));
            *w = Writer::Running(tx, Some(task.abort_handle()));
        }
        match &*w {
            Writer::Running(tx, _) => tx.send(cmd).is_ok(),
            Writer::None | Writer::Closed => false,
        }
    }

    /// No more output: the writer writes what is queued and ends.
    pub fn close(&self) {
        *self.lock() = Writer::Closed;
    }

    /// No more output, and what is queued is dropped (a task that does not read).
    pub fn abort(&self) {
        if let Writer::Running(_, Some(task)) = std::mem::replace(&mut *self.lock(), Writer::Closed) {
            task.abort();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // One thread: a poisoned lock only means a panic elsewhere; the state is whole.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    use crate::server::test_rt as rt;

    fn has_writer(o: &Outlet) -> bool {
        matches!(*o.lock(), Writer::Running(..))
    }

    /// An outlet over one end of a socket pair (read side kept open) and the other end.
    fn pair() -> (Arc<Outlet>, super::super::tasksock::TaskRead, tokio::net::UnixStream) {
        let (ours, peer) = tokio::net::UnixStream::pair().unwrap();
        let (rd, wr) = super::super::tasksock::split(ours).unwrap();
        (Outlet::new(wr), rd, peer)
    }

    async fn read_to_end(peer: &mut tokio::net::UnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
            .await
            .expect("the write side was not shut down")
            .unwrap();
        got
    }

    #[test]
    fn the_writer_starts_on_the_first_queued_write_and_ends_when_closed() {
        rt().block_on(async {
            let (out, _rd, mut peer) = pair();
            assert!(!has_writer(&out), "no writer before anything had to wait");
            out.queued().fetch_add(5, Ordering::Relaxed);
            assert!(out.send(WriteCmd::Data(b"hello".to_vec())));
            assert!(has_writer(&out));
            let mut got = [0u8; 5];
            peer.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
            // The writer counts what it wrote off.
            for _ in 0..100 {
                if out.idle() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            assert!(out.idle());
            out.queued().fetch_add(3, Ordering::Relaxed);
            assert!(out.send(WriteCmd::Data(b"end".to_vec())));
            let gone = Arc::downgrade(&out);
            out.close();
            assert!(!out.send(WriteCmd::Data(b"late".to_vec())), "closed: dropped");
            drop(out);
            // What was queued before the close is written, then the writer lets the outlet
            // go and the task sees the end of the stream.
            assert_eq!(read_to_end(&mut peer).await, b"end");
            assert!(gone.upgrade().is_none(), "the writer let the outlet go");
        });
    }

    #[test]
    fn an_outlet_never_queued_to_shuts_down_when_dropped() {
        rt().block_on(async {
            let (out, _rd, mut peer) = pair();
            out.close();
            drop(out);
            assert!(read_to_end(&mut peer).await.is_empty());
        });
    }

    #[test]
    fn abort_drops_what_is_queued() {
        rt().block_on(async {
            let (out, _rd, mut peer) = pair();
            let big = vec![7u8; 8 << 20]; // more than the socket holds: the writer must wait
            out.queued().fetch_add(big.len(), Ordering::Relaxed);
            assert!(out.send(WriteCmd::Data(big)));
            for _ in 0..10 {
                tokio::task::yield_now().await; // the writer fills the socket and waits
            }
            out.abort();
            drop(out);
            let got = read_to_end(&mut peer).await;
            assert!(!got.is_empty() && got.len() < 8 << 20, "{} bytes", got.len());
        });
    }
}
