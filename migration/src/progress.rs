//! Progress output for long operations (migrate, checkpoint, restart, adding many hosts), shared
//! by the `pvm` console and `pvm-migrate`.
//!
//! On a terminal one status line ticks with the elapsed time while the operation runs (a
//! thread redraws it; the operation itself stays on the caller's thread, because the PVM task
//! library is not thread-safe); when output is not a terminal (scripts, logs, tests) there is
//! no redrawing: one line when the operation starts and one with the result. Either way the
//! final line reads `LABEL: RESULT (1.23 s)`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the terminal line is redrawn.
const TICK: Duration = Duration::from_millis(100);

/// `0.42 s`, `12.3 s`, `2 min 05 s`.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {:02} s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// One running operation.
pub struct Progress {
    label: String,
    /// What the terminal line shows: the label and the current step.
    shown: Arc<Mutex<String>>,
    start: Instant,
    tty: bool,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `label` (e.g. `checkpoint t40002`) on stdout.
    pub fn start(label: impl Into<String>) -> Progress {
        Progress::with_tty(label, std::io::stdout().is_terminal())
    }

    /// [`Progress::start`] with the terminal decision made by the caller.
    pub fn with_tty(label: impl Into<String>, tty: bool) -> Progress {
        let label = label.into();
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let shown = Arc::new(Mutex::new(label.clone()));
        let ticker = if tty {
            let (l, s) = (shown.clone(), stop.clone());
            let draw = move |l: &Mutex<String>| {
                let text = l.lock().map(|t| t.clone()).unwrap_or_default();
                let mut o = std::io::stdout().lock();
                let _ = write!(o, "\r\x1b[K{text} ... {}", elapsed(start.elapsed()));
                let _ = o.flush();
            };
            // The first frame now, so that even a quick operation shows what it was doing.
            draw(&shown);
            Some(std::thread::spawn(move || loop {
                // Woken early by `halt` (unpark), so finishing never waits for a tick.
                std::thread::park_timeout(TICK);
                if s.load(Ordering::Relaxed) {
                    return;
                }
                draw(&l);
            }))
        } else {
            line(&format!("{label} ..."));
            None
        };
        Progress {
            label,
            shown,
            start,
            tty,
            stop,
            ticker,
        }
    }

    /// A step of a multi-part operation (`3/10 hosts`): shown on the ticking line of a
    /// terminal, printed as a line otherwise.
    pub fn step(&mut self, what: &str) {
        if self.tty {
            if let Ok(mut t) = self.shown.lock() {
                *t = format!("{} [{what}]", self.label);
            }
        } else {
            line(&format!("{}: {what} ({})", self.label, elapsed(self.start.elapsed())));
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
            let mut o = std::io::stdout().lock();
            let _ = write!(o, "\r\x1b[K");
            let _ = o.flush();
        }
    }

    /// Ends the operation with its result; returns the final line (also printed).
    pub fn finish(mut self, result: &str) -> String {
        self.halt();
        let l = format!("{}: {result} ({})", self.label, elapsed(self.start.elapsed()));
        line(&l);
        l
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.halt();
    }
}

fn line(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
    let _ = o.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_text() {
        assert_eq!(elapsed(Duration::from_millis(420)), "0.42 s");
        assert_eq!(elapsed(Duration::from_millis(12_345)), "12.3 s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2 min 05 s");
    }

    #[test]
    fn plain_lines_when_not_a_terminal() {
        let p = Progress::with_tty("checkpoint t40002", false);
        assert!(p.ticker.is_none());
        let l = p.finish("epoch 1");
        assert!(l.starts_with("checkpoint t40002: epoch 1 (0.0"), "{l}");
        assert!(l.ends_with(" s)"), "{l}");
    }

    #[test]
    fn ticker_stops() {
        let mut p = Progress::with_tty("x", true);
        std::thread::sleep(Duration::from_millis(150));
        p.step("1/2");
        assert_eq!(*p.shown.lock().unwrap(), "x [1/2]");
        let l = p.finish("done");
        assert!(l.starts_with("x: done ("), "{l}");
    }
}
