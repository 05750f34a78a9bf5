//! `pvm`: the PVM console.
//!
//! Accepts the legacy console's commands and prints their output formats, so scripts written
//! for the legacy `pvm` keep working; adds `hosts` (owner state, load and guests from the
//! scheduler's `pvm-sched.hosts` mailbox entry) and `migrate`, `checkpoint`, `restart` (the
//! pvm-rs calls, with progress: docs/console.md). Reads commands from the terminal (with
//! history) or from stdin when it is not a terminal; task output of `spawn ->` jobs is shown as
//! it arrives.

use pvm_console::ffi;
use pvm_console::format::*;
use pvm_migration::progress::Progress;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

const PVM_ROUTE: i32 = 1;
const PVM_AUTO_ERR: i32 = 3;
const PVM_RESV_TIDS: i32 = 11;
const PVM_NO_RESET: i32 = 25;
const PVM_OUTPUT_TID: i32 = 4;
const PVM_OUTPUT_CODE: i32 = 5;
const PVM_TRACE_TID: i32 = 6;
const PVM_TRACE_CODE: i32 = 7;
const PVM_TRACE_BUFFER: i32 = 8;
const PVM_TRACE_OPTIONS: i32 = 9;
/// Tag of task-output messages for `spawn ->` jobs (the legacy console uses 5 too).
const OUT_TAG: i32 = 5;
/// Tag of trace events for `spawn -@` jobs.
const TRC_TAG: i32 = 6;
/// PvmNotImpl.
const PVM_NOT_IMPL: i32 = -24;
/// The mailbox entry a scheduler publishes host states in (docs/console.md).
const SCHED_HOSTS: &str = "pvm-sched.hosts";

/// The local pvmd's log, `$PVM_TMP/pvml.<uid>` (the console runs on the pvmd's host).
fn daemon_log() -> std::path::PathBuf {
    let tmp = std::env::var("PVM_TMP")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "/tmp".into());
    // SAFETY: getuid cannot fail.
    std::path::Path::new(&tmp).join(format!("pvml.{}", unsafe { libc::getuid() }))
}

const OPTS: &[(&str, i32)] = &[
    ("PvmRoute", 1),
    ("PvmDebugMask", 2),
    ("PvmAutoErr", 3),
    ("PvmOutputTid", 4),
    ("PvmOutputCode", 5),
    ("PvmTraceTid", 6),
    ("PvmTraceCode", 7),
    ("PvmTraceBuffer", 8),
    ("PvmTraceOptions", 9),
    ("PvmFragSize", 10),
    ("PvmResvTids", 11),
    ("PvmSelfOutputTid", 12),
    ("PvmSelfOutputCode", 13),
    ("PvmSelfTraceTid", 14),
    ("PvmSelfTraceCode", 15),
    ("PvmSelfTraceBuffer", 16),
    ("PvmSelfTraceOptions", 17),
    ("PvmShowTids", 18),
    ("PvmOutputContext", 21),
    ("PvmTraceContext", 22),
    ("PvmSelfOutputContext", 23),
    ("PvmSelfTraceContext", 24),
    ("PvmNoReset", 25),
];

const HELP: &[(&str, &str, &str)] = &[
    ("add", "Add hosts to virtual machine", "add hostname ..."),
    (
        "alias",
        "Define/list command aliases",
        "alias [ name command args ... ]",
    ),
    (
        "checkpoint",
        "Checkpoint tasks and let them run on (pvm-rs daemon)",
        "checkpoint tid ... | -a",
    ),
    ("conf", "List virtual machine configuration", "conf"),
    ("delete", "Delete hosts from virtual machine", "delete hostname ..."),
    ("echo", "Echo arguments", "echo [ arg ... ]"),
    (
        "export",
        "Add environment variables to spawn export list",
        "export [ varname ... ]",
    ),
    ("getopt", "Display PVM options for the console task", "getopt [ what ]"),
    ("halt", "Stop pvmds", "halt"),
    ("help", "Print helpful information about a command", "help [ command ]"),
    (
        "hosts",
        "List hosts with owner state, load and guests (from a scheduler)",
        "hosts",
    ),
    ("id", "Print console task id", "id"),
    ("jobs", "Display list of running jobs", "jobs [ -l ]"),
    ("kill", "Terminate tasks", "kill [ -c ] tid ..."),
    (
        "migrate",
        "Migrate a task to another host (pvm-rs daemon)",
        "migrate tid host",
    ),
    ("mstat", "Show status of hosts", "mstat host ..."),
    ("names", "List message mailbox names", "names [ pattern ]"),
    ("ps", "List tasks", "ps [ -axh ]"),
    ("pstat", "Show status of tasks", "pstat tid ..."),
    ("put", "Add entry to message mailbox", "put name flags"),
    ("quit", "Exit console", "quit"),
    ("reset", "Kill all tasks, delete leftover mboxes", "reset"),
    (
        "restart",
        "Restart a killed task from its checkpoint (pvm-rs daemon)",
        "restart tid [ epoch ]",
    ),
    (
        "setenv",
        "Display or set environment variables",
        "setenv [ name[=value] ... ]",
    ),
    (
        "setopt",
        "Set PVM options - for the console task *only*!",
        "setopt what value",
    ),
    ("sig", "Send signal to task", "sig signum tid ..."),
    ("spawn", "Spawn task", "spawn [ options ] file [ arg ... ]"),
    ("tickle", "Tickle pvmd", "tickle how [ arg ... ]"),
    (
        "trace",
        "Set/display trace event mask",
        "trace [ + | - ] [ event ... | * ]",
    ),
    ("unalias", "Undefine command alias", "unalias name ..."),
    (
        "unexport",
        "Remove environment variables from spawn export list",
        "unexport [ varname ... ]",
    ),
    ("version", "Show libpvm version", "version"),
];

/// Commands the legacy `help` lists (our additions are listed after them).
const LEGACY_HELP: &[&str] = &[
    "add", "alias", "conf", "delete", "echo", "export", "getopt", "halt", "help", "id", "jobs", "kill", "mstat",
    "names", "ps", "pstat", "put", "quit", "reset", "setenv", "setopt", "sig", "spawn", "trace", "unalias", "unexport",
    "version",
];

const SPAWN_HELP: &str = "Options:  -(count)         number of tasks, default is 1
          -(host)          spawn on host, default is any
          -(host):(wd)     spawn on host, in directory 'wd'
          --host=(IP)      spawn on host with given IP addr
          --host=(IP):(wd) spawn on IP, in directory 'wd'
          -(ARCH)          spawn on hosts of ARCH
          -(ARCH):(wd)     spawn on hosts of ARCH, in 'wd'
          -:(wd)           spawn in working directory 'wd'
          -?               enable debugging
          ->               redirect job output to console
          ->(file)         redirect output of job to file
          ->>(file)        append output of job to file
          -@               trace job, output to terminal
          -@(file)         trace job, output to file";

const PS_HELP: &str = "Options:  -a       all hosts (default is local)
          -hhost   specific host tid
          -nhost   specific host name
          -l       long (show process id)
          -x       show all tasks (e.g. console and nulls)
Output fields:
  HOST    host name
  TID     task id
  PTID    parent task id
  PID     task process id
  FLAG    status
  COMMAND executable name
FLAG values:
  f   task process is child of pvmd
  c   task connected to pvmd
  a   task waiting authorization
  o   task connection being closed
  s   task needs too many shared pages, is deadlocked
  H   hoster task
  R   resource manager task
  T   tasker task";

enum Sink {
    Console,
    File(std::fs::File),
}

struct Job {
    tids: Vec<i32>,
    live: usize,
    sink: Sink,
}

struct Console {
    me: i32,
    aliases: BTreeMap<String, Vec<String>>,
    jobs: BTreeMap<i32, Job>,
    next_job: i32,
    /// Task -> job, for output and trace messages.
    owner: BTreeMap<i32, i32>,
    tmask: Vec<u8>,
    tev: pvm_console::tev::Decoder,
}

fn out(s: impl AsRef<str>) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", s.as_ref());
    let _ = o.flush();
}

fn usage() -> ! {
    println!(
        "usage: pvm [-n<name>] [-d<debugmask>] [hostfile]\n\
         \n\
         The PVM console. Starts a pvmd (PVM_ROOT/lib/pvmd or the one the library finds) if none\n\
         is running, then reads commands from the terminal (line history in ~/.pvm_history) or,\n\
         when stdin is not a terminal, one command per line from stdin.\n\
         Commands: the legacy console's (type `help`), plus `hosts` (owner state, load and\n\
         guests when a scheduler publishes them), `migrate tid host`, `checkpoint tid...|-a` and\n\
         `restart tid [epoch]` on a pvm-rs daemon; a legacy daemon answers those three with\n\
         \"not supported by this daemon\". Long operations show their elapsed time on a\n\
         terminal and end with a line `what: result (time)`. See docs/console.md.\n\
         Options: -n<name> sets the host name passed to the pvmd, -d<mask> its debug mask;\n\
         a hostfile is passed to the pvmd as the legacy console does."
    );
    std::process::exit(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        usage();
    }
    // The library would print the expected PvmDupHost; the console reports it in its own words.
    ffi::setopt(PVM_AUTO_ERR, 0);
    let cc = ffi::start_pvmd(&args);
    if cc == -28 {
        out("pvmd already running.");
    } else if cc < 0 {
        eprintln!("pvm: can't start pvmd: {}", ffi::errtext(cc));
    }
    let me = ffi::mytid();
    if me < 0 {
        eprintln!("pvm: can't enroll in pvm: {}", ffi::errtext(me));
        std::process::exit(1);
    }
    ffi::setopt(PVM_AUTO_ERR, 1);
    // As the legacy console: messages through the pvmds, reserved tids allowed, and the
    // console survives `reset` (PvmNoReset leaves a marker in the mailbox).
    ffi::setopt(PVM_ROUTE, 1);
    ffi::setopt(PVM_RESV_TIDS, 1);
    ffi::setopt(PVM_NO_RESET, 1);
    // The legacy console's initial child trace mask (what `spawn -@` traces).
    let tmask = pvm_console::tev::mask_of(&ffi::event_names(), pvm_console::tev::DEFAULT_EVENTS);
    ffi::settmask(ffi::PVM_TASK_CHILD, &tmask);
    let tmask = tmask.into_bytes();
    let mut c = Console {
        me,
        aliases: BTreeMap::new(),
        jobs: BTreeMap::new(),
        next_job: 1,
        owner: BTreeMap::new(),
        tmask,
        tev: pvm_console::tev::Decoder::new(pvm_console::tev::with_extensions(ffi::event_names()), ffi::did_names()),
    };
    let interactive = std::io::stdin().is_terminal();
    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || reader(tx, interactive));
    let mut prompted = false;
    loop {
        // On a terminal the line editor shows the prompt.
        if !prompted && !interactive {
            print!("pvm> ");
            let _ = std::io::stdout().flush();
            prompted = true;
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Some(line)) => {
                if !interactive {
                    out(&line);
                }
                prompted = false;
                if !c.run_line(&line, 0) {
                    break;
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if !interactive {
                    out("quit");
                }
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        c.poll();
    }
    c.quit();
}

/// Reads lines on a thread so job output can be shown while waiting for input.
fn reader(tx: mpsc::Sender<Option<String>>, interactive: bool) {
    if interactive {
        if let Ok(ed) = rustyline::DefaultEditor::new() {
            return edit_lines(tx, ed);
        }
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if tx.send(Some(line)).is_err() {
            return;
        }
    }
    let _ = tx.send(None);
}

/// Terminal input with line editing; history is loaded from and appended to `~/.pvm_history`
/// (plain lines, so the legacy console's readline history file works too).
fn edit_lines(tx: mpsc::Sender<Option<String>>, mut ed: rustyline::DefaultEditor) {
    let hist = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".pvm_history"));
    if let Some(text) = hist.as_ref().and_then(|h| std::fs::read_to_string(h).ok()) {
        // Only the most recent entries: the file may have grown over years.
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for l in &lines[lines.len().saturating_sub(1000)..] {
            let _ = ed.add_history_entry(*l);
        }
    }
    loop {
        match ed.readline("pvm> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = ed.add_history_entry(line.as_str());
                    if let Some(h) = &hist {
                        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(h) {
                            let _ = writeln!(f, "{line}");
                        }
                    }
                }
                let last = matches!(line.split_whitespace().next(), Some("quit" | "halt"));
                if tx.send(Some(line)).is_err() || last {
                    // No new prompt after the command that ends the console.
                    return;
                }
            }
            // Ctrl-C abandons the line being typed, as a shell does.
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    let _ = tx.send(None);
}

impl Console {
    fn quit(&mut self) {
        out("");
        out("Console: exit handler called");
        ffi::exit();
        out("pvmd still running.");
    }

    /// Shows task output and trace events that arrived for our jobs.
    fn poll(&mut self) {
        while ffi::nrecv(-1, OUT_TAG).is_some() {
            self.output_msg();
        }
        while ffi::nrecv(-1, TRC_TAG).is_some() {
            // Trace events of `spawn -@` jobs: printed by name, like the legacy terminal tracer.
            // The decoder reads until the end of the message; that is not an error to print.
            let auto = ffi::setopt(PVM_AUTO_ERR, 0);
            let evs = self.tev.message(&mut ffi::RecvBuf);
            ffi::setopt(PVM_AUTO_ERR, auto);
            for ev in evs {
                out(format!("{ev}"));
            }
        }
    }

    fn output_msg(&mut self) {
        let Ok(tid) = ffi::upkint() else { return };
        let Ok(n) = ffi::upkint() else { return };
        let job = self.owner.get(&tid).copied();
        if n == -2 {
            // TO_NEW: a task started by one of ours joins its parent's job.
            if let Ok(ptid) = ffi::upkint() {
                if let Some(j) = self.owner.get(&ptid).copied() {
                    self.owner.insert(tid, j);
                    if let Some(job) = self.jobs.get_mut(&j) {
                        job.tids.push(tid);
                        job.live += 1;
                    }
                }
            }
            return;
        }
        if n < 0 {
            return;
        }
        let label = match job {
            Some(j) => format!("[{j}:t{tid:x}]"),
            None => format!("[t{tid:x}]"),
        };
        if n == 0 {
            let Some(j) = job else {
                out(format!("{label} EOF"));
                return;
            };
            let finished = if let Some(jb) = self.jobs.get_mut(&j) {
                if matches!(jb.sink, Sink::Console) {
                    out(format!("{label} EOF"));
                }
                jb.live = jb.live.saturating_sub(1);
                jb.live == 0
            } else {
                false
            };
            if finished {
                self.jobs.remove(&j);
                out(format!("[{j}] finished"));
            }
            return;
        }
        let Ok(data) = ffi::upkbytes(n as usize) else { return };
        let text = String::from_utf8_lossy(&data);
        match job.and_then(|j| self.jobs.get_mut(&j)) {
            Some(Job {
                sink: Sink::File(f), ..
            }) => {
                let _ = f.write_all(&data);
            }
            _ => {
                for l in text.lines() {
                    out(format!("{label} {l}"));
                }
            }
        }
    }

    /// Runs one line; returns false to leave the console.
    fn run_line(&mut self, line: &str, depth: u32) -> bool {
        let mut av = split_words(line);
        if av.is_empty() {
            return true;
        }
        if depth < 10 {
            if let Some(a) = self.aliases.get(&av[0]).cloned() {
                av.splice(0..1, a);
                return self.run_line(&av.join(" "), depth + 1);
            }
        }
        let a: Vec<&str> = av.iter().map(|s| s.as_str()).collect();
        self.run(&a)
    }

    fn wrong(&self, cmd: &str) {
        out(format!("{cmd}: wrong #args"));
    }

    fn run(&mut self, av: &[&str]) -> bool {
        let cmd = av[0];
        let n = av.len();
        match cmd {
            "quit" => return false,
            "halt" => {
                ffi::halt();
                std::process::exit(0);
            }
            "help" | "?" => self.help(av.get(1).copied()),
            "version" => out(ffi::version()),
            "id" => out(format!("t{:x}", self.me)),
            "echo" => out(av[1..].join(" ")),
            "conf" => self.conf(),
            "hosts" => self.hosts(),
            "ps" => self.ps(&av[1..]),
            "jobs" => self.jobs(av.get(1) == Some(&"-l")),
            "mstat" => {
                if n < 2 {
                    self.wrong(cmd);
                }
                for h in &av[1..] {
                    let cc = ffi::mstat(h);
                    out(format!(
                        "{h:>24}  {}",
                        if cc >= 0 { "ok".to_string() } else { ffi::errtext(cc) }
                    ));
                }
            }
            "pstat" => {
                if n < 2 {
                    self.wrong(cmd);
                }
                for t in &av[1..] {
                    let Some(tid) = parse_tid(t) else {
                        out(format!("{t}: bad tid"));
                        continue;
                    };
                    let cc = ffi::pstat(tid);
                    out(format!(
                        "t{tid:>8x}  {}",
                        if cc >= 0 { "run".to_string() } else { ffi::errtext(cc) }
                    ));
                }
            }
            "add" => {
                if n < 2 {
                    self.wrong(cmd);
                    return true;
                }
                let names: Vec<String> = av[1..].iter().map(|s| s.to_string()).collect();
                // Progress only on a terminal: scripts get the legacy output byte for byte.
                let p = std::io::stdout().is_terminal().then(|| {
                    Progress::with_tty(
                        format!("add {} host{}", names.len(), if names.len() == 1 { "" } else { "s" }),
                        true,
                    )
                });
                let (cc, infos) = ffi::addhosts(&names);
                if let Some(p) = p {
                    let ok = infos.iter().filter(|&&i| i >= 0).count();
                    p.finish(&format!("{ok} of {} added", names.len()));
                }
                if cc < 0 {
                    // The library has reported the error (PvmAutoErr); the legacy console adds nothing.
                    return true;
                }
                let ok = if cc < 0 {
                    0
                } else {
                    infos.iter().filter(|&&i| i >= 0).count()
                };
                out(format!("{ok} successful"));
                out(format!("{:>24} {:>8}", "HOST", "DTID"));
                for (h, i) in names.iter().zip(&infos) {
                    if cc >= 0 && *i >= 0 {
                        out(format!("{h:>24} {i:>8x}"));
                    } else {
                        out(format!("{h:>24} {}", ffi::errtext(if cc < 0 { cc } else { *i })));
                    }
                }
            }
            "delete" => {
                if n < 2 {
                    self.wrong(cmd);
                    return true;
                }
                let names: Vec<String> = av[1..].iter().map(|s| s.to_string()).collect();
                let (cc, infos) = ffi::delhosts(&names);
                if cc < 0 {
                    // The library has reported the error (PvmAutoErr); the legacy console adds nothing.
                    return true;
                }
                let ok = if cc < 0 {
                    0
                } else {
                    infos.iter().filter(|&&i| i >= 0).count()
                };
                out(format!("{ok} successful"));
                out(format!("{:>24}  STATUS", "HOST"));
                for (h, i) in names.iter().zip(&infos) {
                    let st = if cc < 0 {
                        ffi::errtext(cc)
                    } else if *i >= 0 {
                        "deleted".into()
                    } else {
                        ffi::errtext(*i)
                    };
                    out(format!("{h:>24}  {st}"));
                }
            }
            "kill" => {
                if n < 2 {
                    self.wrong(cmd);
                    return true;
                }
                for t in &av[1..] {
                    if *t == "-c" {
                        continue;
                    }
                    match parse_tid(t) {
                        Some(tid) if tid == self.me => {
                            out("t{:x}: can't kill myself".replace("{:x}", &format!("{tid:x}")))
                        }
                        Some(tid) => {
                            ffi::kill(tid);
                        }
                        None => out(format!("{t}: bad tid")),
                    }
                }
            }
            "sig" => {
                if n < 3 {
                    self.wrong(cmd);
                    return true;
                }
                let Some(sig) = parse_int(av[1]) else {
                    out(format!("{}: bad signal", av[1]));
                    return true;
                };
                for t in &av[2..] {
                    if let Some(tid) = parse_tid(t) {
                        ffi::sendsig(tid, sig);
                    }
                }
            }
            "reset" => self.reset(),
            "setenv" => {
                if n == 1 {
                    for (k, v) in std::env::vars_os() {
                        out(format!("{}={}", k.to_string_lossy(), v.to_string_lossy()));
                    }
                } else {
                    for kv in &av[1..] {
                        if let Some((k, v)) = kv.split_once('=') {
                            if !k.is_empty() {
                                std::env::set_var(k, v);
                            }
                        } else if let Ok(v) = std::env::var(kv) {
                            out(format!("{kv}={v}"));
                        }
                    }
                }
            }
            "export" => {
                if n == 1 {
                    out(format!(
                        "PVM_EXPORT={}",
                        std::env::var("PVM_EXPORT").unwrap_or_default()
                    ));
                } else {
                    for v in &av[1..] {
                        ffi::export(v);
                    }
                }
            }
            "unexport" => {
                for v in &av[1..] {
                    ffi::unexport(v);
                }
            }
            "alias" => {
                if n == 1 {
                    for (k, v) in &self.aliases {
                        out(format!("{k}\t{}", v.join(" ")));
                    }
                } else if n == 2 {
                    if let Some(v) = self.aliases.get(av[1]) {
                        out(format!("{}\t{}", av[1], v.join(" ")));
                    }
                } else {
                    self.aliases
                        .insert(av[1].to_string(), av[2..].iter().map(|s| s.to_string()).collect());
                }
            }
            "unalias" => {
                for a in &av[1..] {
                    self.aliases.remove(*a);
                }
            }
            "getopt" => {
                if n == 1 {
                    for (name, w) in OPTS {
                        out(format!("{name} Currently Set to {}", ffi::getopt(*w)));
                    }
                } else {
                    for a in &av[1..] {
                        match opt(a) {
                            Some((name, w)) => out(format!("{name} Currently Set to {}", ffi::getopt(w))),
                            None => out(format!("PVM Option \"{a}\" Unknown.")),
                        }
                    }
                }
            }
            "setopt" => {
                if n != 3 {
                    self.wrong(cmd);
                    return true;
                }
                match (opt(av[1]), parse_int(av[2])) {
                    (Some((name, w)), Some(v)) => {
                        let old = ffi::setopt(w, v);
                        out(format!("{name} Changed from {old} to {}", ffi::getopt(w)));
                    }
                    (None, _) => out(format!("PVM Option \"{}\" Unknown.", av[1])),
                    (_, None) => out(format!("{}: bad value", av[2])),
                }
            }
            "names" => match ffi::mboxinfo(av.get(1).copied().unwrap_or("*")) {
                Ok(classes) => {
                    for m in classes {
                        out(format!("<{}>:", m.name));
                        for (i, o, f) in m.entries {
                            out(format!("\tindex={i} owner=0x{o:x}/{o} flags=0x{f:x}"));
                        }
                        out("");
                    }
                }
                Err(cc) => out(ffi::errtext(cc)),
            },
            "put" => {
                if n != 3 {
                    self.wrong(cmd);
                    return true;
                }
                let cc = ffi::put_zero(av[1], parse_int(av[2]).unwrap_or(0));
                if cc < 0 {
                    out(ffi::errtext(cc));
                }
            }
            "delinfo" => {
                if n < 2 {
                    self.wrong(cmd);
                    return true;
                }
                let cc = ffi::delinfo(av[1], av.get(2).and_then(|s| parse_int(s)).unwrap_or(0), 0);
                if cc < 0 {
                    out(ffi::errtext(cc));
                }
            }
            "tickle" => {
                if n < 2 {
                    self.wrong(cmd);
                    return true;
                }
                let a: Vec<i32> = av[1..].iter().filter_map(|s| parse_int(s)).collect();
                match ffi::tickle(&a) {
                    Ok(r) => out(r.iter().map(|v| format!("{v:x}")).collect::<Vec<_>>().join(" ")),
                    Err(cc) => out(format!("tickle: {}", ffi::errtext(cc))),
                }
            }
            "trace" => self.trace(&av[1..]),
            "spawn" => self.spawn(&av[1..]),
            "migrate" => {
                if n != 3 {
                    self.wrong(cmd);
                    return true;
                }
                match parse_tid(av[1]) {
                    Some(tid) => self.migrate(tid, av[2]),
                    None => out(format!("{}: bad tid", av[1])),
                }
            }
            "checkpoint" => {
                if n < 2 {
                    self.wrong(cmd);
                    return true;
                }
                self.checkpoint(&av[1..]);
            }
            "restart" => {
                if !(2..=3).contains(&n) {
                    self.wrong(cmd);
                    return true;
                }
                let epoch = match av.get(2).map(|e| parse_int(e)) {
                    None => -1,
                    Some(Some(e)) => e,
                    Some(None) => {
                        out(format!("{}: bad epoch", av[2]));
                        return true;
                    }
                };
                match parse_tid(av[1]) {
                    Some(tid) => self.restart(tid, epoch),
                    None => out(format!("{}: bad tid", av[1])),
                }
            }
            _ => out(format!("{cmd}: not found")),
        }
        true
    }

    fn help(&self, what: Option<&str>) {
        match what {
            None => {
                out("help        Print helpful information about a command");
                out("Syntax:  help [ command ]");
                out("Commands are:");
                for name in LEGACY_HELP {
                    if let Some((n, d, _)) = HELP.iter().find(|h| h.0 == *name) {
                        out(format!("  {n:<11} {d}"));
                    }
                }
                out("Added by pvm-rs:");
                for (n, d, _) in HELP.iter().filter(|h| !LEGACY_HELP.contains(&h.0)) {
                    out(format!("  {n:<11} {d}"));
                }
            }
            Some(w) => match HELP.iter().find(|h| h.0 == w) {
                Some((n, d, syn)) => {
                    out(format!("{n:<11} {d}"));
                    out(format!("Syntax:  {syn}"));
                    if w == "spawn" {
                        out(SPAWN_HELP);
                    } else if w == "ps" {
                        out(PS_HELP);
                    }
                }
                None => out(format!("help: {w}: not found")),
            },
        }
    }

    fn conf(&self) {
        match ffi::config() {
            Ok((hosts, narch)) => {
                let s = |k: usize| if k == 1 { "" } else { "s" };
                out(format!(
                    "{} host{}, {} data format{}",
                    hosts.len(),
                    s(hosts.len()),
                    narch,
                    s(narch as usize)
                ));
                out(conf_header());
                for h in hosts {
                    out(conf_row(&h.name, h.tid, &h.arch, h.speed, h.dsig));
                }
            }
            Err(cc) => out(format!("conf: {}", ffi::errtext(cc))),
        }
    }

    /// `hosts`: the configuration plus each host's state as `pvm_mstat` reports it, and the
    /// owner state, load and guests that a scheduler publishes in the `pvm-sched.hosts`
    /// mailbox entry (docs/console.md); `-` where nobody publishes them.
    fn hosts(&self) {
        let auto = ffi::setopt(PVM_AUTO_ERR, 0);
        let sched = ffi::lookup_str(SCHED_HOSTS).map(|t| pvm_console::format::parse_sched_hosts(&t));
        ffi::setopt(PVM_AUTO_ERR, auto);
        match ffi::config() {
            Ok((hosts, _)) => {
                out(format!(
                    "{:>24} {:>8} {:>8} {:<12} {:<6} {:>6} {}",
                    "HOST", "DTID", "ARCH", "STATUS", "OWNER", "LOAD", "GUESTS"
                ));
                for h in hosts {
                    let cc = ffi::mstat(&h.name);
                    let st = if cc >= 0 { "ok".to_string() } else { ffi::errtext(cc) };
                    let row = sched.as_ref().and_then(|s| s.get(&h.tid));
                    let (owner, load, guests) = row.map_or(("-", "-", "-"), |r| {
                        (r.owner.as_str(), r.load.as_str(), r.guests.as_str())
                    });
                    out(format!(
                        "{:>24} {:>8x} {:>8} {:<12} {owner:<6} {load:>6} {guests}",
                        h.name, h.tid, h.arch, st
                    ));
                }
                if sched.is_none() {
                    out(format!(
                        "(no scheduler publishes {SCHED_HOSTS}: owner, load and guests unknown)"
                    ));
                }
            }
            Err(cc) => out(format!("hosts: {}", ffi::errtext(cc))),
        }
    }

    /// Runs one pvm-rs call (library error reporting off: the console says it in its words);
    /// returns its result and the size the pvmd log had before it.
    fn ext_call(&self, f: impl FnOnce() -> i32) -> (i32, u64) {
        let before = std::fs::metadata(daemon_log()).map_or(0, |m| m.len());
        let auto = ffi::setopt(PVM_AUTO_ERR, 0);
        let cc = f();
        ffi::setopt(PVM_AUTO_ERR, auto);
        (cc, before)
    }

    /// The words for a refused or failed pvm-rs call on `tid`.
    fn refusal(&self, (cc, before): (i32, u64), tid: i32) -> String {
        if cc == PVM_NOT_IMPL && !ffi::daemon_is_pvm_rs() {
            return "not supported by this daemon (a legacy pvmd: run pvmd-rs for migration and checkpoints)"
                .to_string();
        }
        let why = match pvm_console::format::refusal_from_log(&daemon_log(), tid, before) {
            Some(w) => format!(": {w}"),
            None if cc == PVM_NOT_IMPL => " (the pvmd log says why)".to_string(),
            None => String::new(),
        };
        format!("refused, {}{why}", ffi::errtext(cc))
    }

    fn migrate(&mut self, tid: i32, host: &str) {
        let p = Progress::start(format!("migrate t{tid:x} -> {host}"));
        let r = self.ext_call(|| ffi::migrate(tid, host));
        let cc = r.0;
        // Success is the new host's tid: as pvm_config gives it (positive), or from an older
        // pvmd-rs the pvmd tid, negative as an int (bit 31 set).
        if cc < 0 && (cc as u32) & 0xc003_ffff != 0x8000_0000 {
            p.finish(&self.refusal(r, tid));
        } else {
            // pvm_config names hosts by the host part of their pvmd tid (as `conf` shows).
            let dtid = cc & 0x3ffc_0000;
            let name = self
                .host_names()
                .get(&dtid)
                .cloned()
                .unwrap_or_else(|| format!("t{dtid:x}"));
            p.finish(&format!("now on {name} (pvmd {dtid:x}), same tid"));
        }
    }

    /// `checkpoint tid ...` or `checkpoint -a` (every task of this host but the console).
    fn checkpoint(&mut self, args: &[&str]) {
        let tids: Vec<i32> = if args == ["-a"] {
            match ffi::tasks(ffi::tidtohost(self.me)) {
                Ok(ts) => ts.iter().map(|t| t.tid).filter(|&t| t != self.me).collect(),
                Err(cc) => return out(format!("checkpoint: {}", ffi::errtext(cc))),
            }
        } else {
            let mut v = Vec::new();
            for a in args {
                match parse_tid(a) {
                    Some(t) => v.push(t),
                    None => out(format!("{a}: bad tid")),
                }
            }
            v
        };
        let t0 = std::time::Instant::now();
        let mut ok = 0;
        for &tid in &tids {
            let p = Progress::start(format!("checkpoint t{tid:x}"));
            let r = self.ext_call(|| ffi::checkpoint(tid, 0));
            let cc = r.0;
            if cc < 0 {
                p.finish(&self.refusal(r, tid));
            } else {
                ok += 1;
                p.finish(&format!("epoch {cc}, task running again"));
            }
        }
        if tids.len() > 1 || args == ["-a"] {
            out(format!(
                "checkpoint: {ok} of {} tasks checkpointed ({})",
                tids.len(),
                pvm_migration::progress::elapsed(t0.elapsed())
            ));
        }
    }

    fn restart(&mut self, tid: i32, epoch: i32) {
        let p = Progress::start(format!("restart t{tid:x}"));
        if epoch != -1 {
            p.finish("refused: only the last checkpoint can be restarted for now (omit the epoch)");
            return;
        }
        let r = self.ext_call(|| ffi::restart(tid, -1));
        let cc = r.0;
        if cc < 0 {
            p.finish(&self.refusal(r, tid));
        } else {
            p.finish(&format!("epoch {cc}, running again as t{tid:x}"));
        }
    }

    fn host_names(&self) -> BTreeMap<i32, String> {
        ffi::config()
            .map(|(h, _)| h.into_iter().map(|h| (h.tid, h.name)).collect())
            .unwrap_or_default()
    }

    fn ps(&self, args: &[&str]) {
        let (mut all, mut long, mut x) = (false, false, false);
        let mut which = ffi::tidtohost(self.me);
        let names = self.host_names();
        for a in args {
            let Some(f) = a.strip_prefix('-') else { continue };
            if let Some(h) = f.strip_prefix('h') {
                if let Some(t) = parse_tid(h) {
                    which = t;
                }
                continue;
            }
            if let Some(h) = f.strip_prefix('n') {
                if let Some((t, _)) = names.iter().find(|(_, n)| n.as_str() == h) {
                    which = *t;
                }
                continue;
            }
            for ch in f.chars() {
                match ch {
                    'a' => all = true,
                    'l' => long = true,
                    'x' => x = true,
                    _ => {}
                }
            }
        }
        if all {
            which = 0;
        }
        out(ps_header(long));
        let Ok(mut tasks) = ffi::tasks(which) else { return };
        tasks.sort_by_key(|t| (t.host, t.tid));
        for t in tasks {
            let cons = t.tid == self.me;
            if !x && (cons || t.a_out.is_empty()) {
                continue;
            }
            let host = names.get(&t.host).cloned().unwrap_or_else(|| format!("{:x}", t.host));
            let tid = if cons {
                "(cons)".to_string()
            } else {
                format!("{:x}", t.tid)
            };
            out(ps_row(&host, &tid, t.ptid, t.pid, t.flag, &t.a_out, long));
        }
    }

    fn jobs(&self, long: bool) {
        if long {
            out(ps_header(false));
        }
        let tasks = if long {
            ffi::tasks(0).unwrap_or_default()
        } else {
            Vec::new()
        };
        let names = self.host_names();
        for (j, job) in &self.jobs {
            out(format!("{j:>2}:"));
            if long {
                for t in tasks.iter().filter(|t| job.tids.contains(&t.tid)) {
                    let host = names.get(&t.host).cloned().unwrap_or_default();
                    out(ps_row(
                        &host,
                        &format!("{:x}", t.tid),
                        t.ptid,
                        t.pid,
                        t.flag,
                        &t.a_out,
                        false,
                    ));
                }
            }
        }
    }

    fn reset(&mut self) {
        if let Ok(tasks) = ffi::tasks(0) {
            for t in tasks {
                // Keep ourselves and anything that is not a task of the user (pvmds have no a.out).
                if t.tid != self.me && t.tid & 0x3ffff != 0 {
                    ffi::kill(t.tid);
                }
            }
        }
        if let Ok(classes) = ffi::mboxinfo("*") {
            for m in classes {
                for (i, owner, _) in m.entries {
                    if owner != self.me && !m.name.starts_with("###_PVM") {
                        ffi::delinfo(&m.name, i, 0);
                    }
                }
            }
        }
        self.jobs.clear();
        self.owner.clear();
    }

    fn trace(&mut self, args: &[&str]) {
        let names = ffi::event_names();
        if args.is_empty() {
            let mut e: Vec<(String, bool)> = names
                .iter()
                .enumerate()
                .filter(|(_, n)| !matches!(n.as_str(), "newtask" | "endtask" | "spntask" | "timing" | "profiling"))
                .map(|(i, n)| (n.clone(), tmask_check(&self.tmask, i)))
                .collect();
            e.sort();
            for l in trace_table(&e) {
                out(l);
            }
            return;
        }
        let mut on = true;
        let mut changed = false;
        for a in args {
            match *a {
                "+" => on = true,
                "-" => on = false,
                "*" => {
                    for i in 0..names.len() {
                        tmask_set(&mut self.tmask, i, on);
                    }
                    changed = true;
                }
                // The pvm-rs kinds (migrate, checkpoint, restart) can be named too; the table
                // above lists the legacy ones only, as the legacy console does.
                ev => match pvm_console::tev::with_extensions(names.clone())
                    .iter()
                    .position(|n| n == ev)
                {
                    Some(i) => {
                        tmask_set(&mut self.tmask, i, on);
                        changed = true;
                    }
                    None => out(format!("no such event \"{ev}\"")),
                },
            }
        }
        if changed {
            ffi::settmask(ffi::PVM_TASK_CHILD, &String::from_utf8_lossy(&self.tmask));
        }
    }

    fn spawn(&mut self, args: &[&str]) {
        let mut count = 1;
        let mut flag = ffi::PVM_TASK_DEFAULT;
        let mut whr: Option<String> = None;
        let mut sink: Option<Sink> = None;
        let mut trace = false;
        let mut i = 0;
        if args.is_empty() {
            self.wrong("spawn");
            return;
        }
        while i < args.len() && args[i].starts_with('-') {
            let o = &args[i][1..];
            if let Some(f) = o.strip_prefix(">>") {
                match std::fs::OpenOptions::new().create(true).append(true).open(f) {
                    Ok(f) => sink = Some(Sink::File(f)),
                    Err(e) => return out(format!("{f}: {e}")),
                }
            } else if let Some(f) = o.strip_prefix('>') {
                if f.is_empty() {
                    sink = Some(Sink::Console);
                } else {
                    match std::fs::File::create(f) {
                        Ok(f) => sink = Some(Sink::File(f)),
                        Err(e) => return out(format!("{f}: {e}")),
                    }
                }
            } else if o.starts_with('@') {
                trace = true;
            } else if o == "?" {
                flag |= ffi::PVM_TASK_DEBUG;
            } else if let Some(h) = o.strip_prefix("-host=") {
                flag |= ffi::PVM_TASK_HOST;
                whr = Some(h.to_string());
            } else if let Some(w) = o.strip_prefix(':') {
                std::env::set_var("PVMWD", w);
                whr = Some(format!(":{w}"));
            } else if !o.is_empty() && o.chars().all(|c| c.is_ascii_digit()) {
                count = o.parse().unwrap_or(1);
            } else if !o.is_empty() {
                let name = o.split(':').next().unwrap_or(o);
                let arch = name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
                flag |= if arch { ffi::PVM_TASK_ARCH } else { ffi::PVM_TASK_HOST };
                whr = Some(o.to_string());
            } else {
                out("incorrect arg count");
                return;
            }
            i += 1;
        }
        if i >= args.len() {
            out("incorrect arg count");
            return;
        }
        let file = args[i];
        let rest: Vec<String> = args[i + 1..].iter().map(|s| s.to_string()).collect();
        let redirect = sink.is_some();
        let job = self.next_job;
        if redirect || trace {
            self.next_job += 1;
            out(format!("[{job}]"));
        }
        // Output options stay as the last `->` job set them (as in the legacy console).
        let saved = (ffi::getopt(PVM_OUTPUT_TID), ffi::getopt(PVM_OUTPUT_CODE));
        if redirect {
            ffi::setopt(PVM_OUTPUT_TID, self.me);
            ffi::setopt(PVM_OUTPUT_CODE, OUT_TAG);
        } else {
            ffi::setopt(PVM_OUTPUT_TID, 0);
        }
        if trace {
            ffi::setopt(PVM_TRACE_TID, self.me);
            ffi::setopt(PVM_TRACE_CODE, TRC_TAG);
            // One message per event, full records (the only option with data).
            ffi::setopt(PVM_TRACE_BUFFER, 0);
            ffi::setopt(PVM_TRACE_OPTIONS, 1);
            flag |= ffi::PVM_TASK_TRACE;
        }
        let (cc, tids) = ffi::spawn(file, &rest, flag, whr.as_deref(), count);
        if !redirect {
            ffi::setopt(PVM_OUTPUT_TID, saved.0);
            ffi::setopt(PVM_OUTPUT_CODE, saved.1);
        }
        if trace {
            ffi::setopt(PVM_TRACE_TID, 0);
        }
        if cc < 0 {
            out(format!("spawn: {}", ffi::errtext(cc)));
            return;
        }
        out(format!("{cc} successful"));
        let mut ok = Vec::new();
        for t in &tids {
            if *t < 0 {
                out(ffi::errtext(*t));
            } else {
                out(format!("t{t:x}"));
                ok.push(*t);
            }
        }
        if redirect || trace {
            for t in &ok {
                self.owner.insert(*t, job);
            }
            let live = if redirect { ok.len() } else { 0 };
            if live > 0 {
                self.jobs.insert(
                    job,
                    Job {
                        tids: ok,
                        live,
                        sink: sink.unwrap_or(Sink::Console),
                    },
                );
            }
        }
    }
}

fn opt(name: &str) -> Option<(&'static str, i32)> {
    OPTS.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, w)| (*n, *w))
}
