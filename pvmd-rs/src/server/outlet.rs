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
