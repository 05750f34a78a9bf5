//! Pending notifications of TM_NOTIFY (messages.md §6): who wants which message when a task
//! exits or a host goes or comes.

use pvm_proto::Tid;

pub const TASK_EXIT: i32 = 1;
pub const HOST_DELETE: i32 = 2;
pub const HOST_ADD: i32 = 3;
pub const CANCEL: i32 = 256;

/// Most pending notifications kept; more are refused with a log line.
pub const MAX_PENDING: usize = 65536;

/// A message the daemon owes a task: `{int tid}` with the task's chosen ctx and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub to: Tid,
    pub ctx: i32,
    pub tag: i32,
    pub wid: i32,
    pub about: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    kind: i32,
    /// Task or host tid watched (unused for HostAdd).
    on: i32,
    watcher: Tid,
    ctx: i32,
    tag: i32,
    wid: i32,
    /// HostAdd: remaining count (-1 forever).
    count: i32,
}

#[derive(Debug, Default)]
pub struct Notifies {
    pending: Vec<Pending>,
}

/// What the daemon knows that decides "fire now or wait".
pub trait World {
    fn task_exists(&self, tid: Tid) -> bool;
    fn host_exists(&self, tid: Tid) -> bool;
}

impl Notifies {
    /// One TM_NOTIFY request. Returns the notices due right away and log lines.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        world: &dyn World,
        watcher: Tid,
        what: i32,
        ctx: i32,
        tag: i32,
        wid: i32,
        tids: &[i32],
        count: i32,
    ) -> (Vec<Notice>, Vec<String>) {
        let mut now = Vec::new();
        let mut logs = Vec::new();
        let cancel = what & CANCEL != 0;
        let notice = |about: i32, wid: i32| Notice {
            to: watcher,
            ctx,
            tag,
            wid,
            about,
        };
        match what & 0xff {
            TASK_EXIT | HOST_DELETE => {
                let kind = what & 0xff;
                // HostDelete notices carry no wait id in the legacy daemon.
                let wid = if kind == TASK_EXIT { wid } else { 0 };
                for &t in tids {
                    let matches = |p: &Pending| {
                        p.kind == kind && p.on == t && p.watcher == watcher && p.ctx == ctx && p.tag == tag
                    };
                    if cancel {
                        if let Some(i) = self.pending.iter().position(matches) {
                            let p = self.pending.remove(i);
                            now.push(notice(p.on, p.wid));
                        }
                        continue;
                    }
                    let exists = if kind == TASK_EXIT {
                        world.task_exists(Tid(t))
                    } else {
                        world.host_exists(Tid(t))
                    };
                    if !exists {
                        now.push(notice(t, wid));
                    } else if self.pending.len() >= MAX_PENDING {
                        logs.push(format!(
                            "tm_notify() too many pending notifies; t{:x} refused",
                            watcher.bits()
                        ));
                    } else {
                        self.pending.push(Pending {
                            kind,
                            on: t,
                            watcher,
                            ctx,
                            tag,
                            wid,
                            count: 1,
                        });
                    }
                }
            }
            HOST_ADD => {
                let same = |p: &Pending| p.kind == HOST_ADD && p.watcher == watcher && p.ctx == ctx && p.tag == tag;
                if count == 0 || cancel {
                    self.pending.retain(|p| !same(p));
                } else if let Some(p) = self.pending.iter_mut().find(|p| same(p)) {
                    p.count = count;
                } else if self.pending.len() < MAX_PENDING {
                    self.pending.push(Pending {
                        kind: HOST_ADD,
                        on: 0,
                        watcher,
                        ctx,
                        tag,
                        wid: 0,
                        count,
                    });
                }
            }
            other => logs.push(format!("tm_notify() unknown what={other}")),
        }
        (now, logs)
    }

    /// A task is gone: its own requests are dropped, and watchers of it are told.
    pub fn task_exited(&mut self, tid: Tid) -> Vec<Notice> {
        self.pending.retain(|p| p.watcher != tid);
        let mut out = Vec::new();
        self.pending.retain(|p| {
            if p.kind == TASK_EXIT && p.on == tid.0 {
                out.push(Notice {
                    to: p.watcher,
                    ctx: p.ctx,
                    tag: p.tag,
                    wid: p.wid,
                    about: p.on,
                });
                false
            } else {
                true
            }
        });
        out
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W;
    impl World for W {
        fn task_exists(&self, t: Tid) -> bool {
            t.0 == 0x40002
        }
        fn host_exists(&self, t: Tid) -> bool {
            t.host() == 1
        }
    }

    const ME: Tid = Tid(0x40001);

    #[test]
    fn task_exit_now_later_and_cancel() {
        let mut n = Notifies::default();
        let (now, _) = n.request(&W, ME, TASK_EXIT, 0, 99, 7, &[0x40002, 0x40009], 2);
        assert_eq!(
            now,
            vec![Notice {
                to: ME,
                ctx: 0,
                tag: 99,
                wid: 7,
                about: 0x40009
            }],
            "unknown task fires at once"
        );
        assert_eq!(n.len(), 1);
        let fired = n.task_exited(Tid(0x40002));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].about, 0x40002);
        assert!(n.is_empty());
        // Cancel fires the pending one immediately.
        n.request(&W, ME, TASK_EXIT, 0, 5, 0, &[0x40002], 1);
        let (now, _) = n.request(&W, ME, TASK_EXIT | CANCEL, 0, 5, 0, &[0x40002], 1);
        assert_eq!(now.len(), 1);
        assert!(n.is_empty());
    }

    #[test]
    fn watchers_that_exit_are_forgotten() {
        let mut n = Notifies::default();
        n.request(&W, ME, TASK_EXIT, 0, 1, 0, &[0x40002], 1);
        n.request(&W, ME, HOST_ADD, 0, 2, 0, &[], -1);
        n.request(&W, ME, HOST_DELETE, 0, 3, 0, &[0x80040000u32 as i32], 1);
        assert_eq!(n.len(), 3);
        assert!(n.task_exited(ME).is_empty());
        assert!(n.is_empty());
    }

    #[test]
    fn host_delete_of_unknown_host_fires_and_host_add_cancels() {
        let mut n = Notifies::default();
        let (now, _) = n.request(&W, ME, HOST_DELETE, 0, 3, 9, &[0x80080000u32 as i32], 1);
        assert_eq!(now[0].wid, 0);
        n.request(&W, ME, HOST_ADD, 0, 2, 0, &[], -1);
        n.request(&W, ME, HOST_ADD, 0, 2, 0, &[], 3);
        assert_eq!(n.len(), 1);
        n.request(&W, ME, HOST_ADD | CANCEL, 0, 2, 0, &[], 1);
        assert!(n.is_empty());
        let (_, logs) = n.request(&W, ME, 9, 0, 2, 0, &[], 1);
        assert_eq!(logs, vec!["tm_notify() unknown what=9"]);
    }
}
