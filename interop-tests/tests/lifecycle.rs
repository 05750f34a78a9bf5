//! Starting, refusing, replacing and stopping: our daemon next to the legacy one.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use interop_tests::*;

fn uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

fn addr_file(tmp: &TmpDir) -> std::path::PathBuf {
    tmp.path().join(format!("pvmd.{}", uid()))
}

/// Strips the `[prefix] MM/DD HH:MM:SS ` of log lines.
fn log_texts(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| match l.split_once("] ") {
            Some((_, rest)) if rest.len() > 15 => rest[15..].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn sigterm_run(kind: Kind) -> (Option<i32>, Vec<String>) {
    let tmp = TmpDir::new(&format!("term-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    assert_eq!(
        std::fs::read_to_string(addr_file(&tmp)).unwrap(),
        d.sock,
        "address file holds the socket path, no newline"
    );
    assert_eq!(std::fs::metadata(addr_file(&tmp)).unwrap().mode() & 0o777, 0o600);
    // The legacy daemon ignores SIGTERM for a moment while it installs its handler; wait until
    // it has logged "ready" so both daemons are in their main loop.
    let t = std::time::Instant::now();
    while !tmp.log().contains(" ready ") {
        assert!(t.elapsed() < TIMEOUT, "{kind:?} never logged ready:\n{}", tmp.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    send_signal(d.proc.pid(), libc::SIGTERM);
    let sock = d.sock.clone();
    let (code, _, _) = Pvmd::into_proc(d).wait(TIMEOUT);
    assert!(!addr_file(&tmp).exists(), "{kind:?} left its address file");
    assert!(!Path::new(&sock).exists(), "{kind:?} left its socket");
    let log = log_texts(&tmp.log());
    (code, log)
}

#[test]
fn sigterm_removes_files_like_legacy() {
    let (code, log) = sigterm_run(Kind::Ours);
    assert_eq!(code, Some(15));
    assert!(log.iter().any(|l| l.starts_with("ready ")), "{log:?}");
    assert!(
        log.ends_with(&["catch() caught signal 15".to_string(), "pvmbailout(15)".to_string()]),
        "{log:?}"
    );
    let (lcode, llog) = sigterm_run(Kind::Legacy);
    assert_eq!(lcode, code);
    assert_eq!(log.len(), llog.len(), "ours {log:?}\nlegacy {llog:?}");
    assert_eq!(log[2..], llog[2..]);
}

#[test]
fn stale_address_file_is_replaced() {
    let tmp = TmpDir::new("stale");
    std::fs::write(addr_file(&tmp), format!("{}/pvmtmp000001.0", tmp.path().display())).unwrap();
    let d = Pvmd::start(Kind::Ours, &tmp, &[]);
    assert_eq!(std::fs::read_to_string(addr_file(&tmp)).unwrap(), d.sock);
    assert!(tmp.log().contains("replaced stale address file"), "{}", tmp.log());
    let (code, out, err) = run(&c_program("basic"), &tmp, &[], None);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("mytid 40001\n"), "{out}");
}

#[test]
fn legacy_ignores_a_stale_address_file() {
    // Documents the legacy behaviour we improve on: it starts but leaves the stale file, so
    // programs that read the file (instead of PVMSOCK) cannot reach it.
    let tmp = TmpDir::new("stale-legacy");
    let stale = format!("{}/pvmtmp000001.0", tmp.path().display());
    std::fs::write(addr_file(&tmp), &stale).unwrap();
    let _d = Pvmd::start(Kind::Legacy, &tmp, &[]);
    assert_eq!(std::fs::read_to_string(addr_file(&tmp)).unwrap(), stale);
}

#[test]
fn second_daemon_refuses_while_first_runs() {
    let tmp = TmpDir::new("second");
    let first = Pvmd::start(Kind::Ours, &tmp, &[]);
    let (code, out, err) = run(&our_pvmd(), &tmp, &[], None);
    assert_eq!(code, Some(1), "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "", "no address line when refusing");
    assert!(err.contains("pvmd already running?"), "{err}");
    assert_eq!(std::fs::read_to_string(addr_file(&tmp)).unwrap(), first.sock);
    assert!(Path::new(&first.sock).exists());
}

fn usage_run(bin: &Path) -> (Option<i32>, String, Vec<String>) {
    let tmp = TmpDir::new("usage");
    let (code, out, err) = run(bin, &tmp, &["a", "b"], None);
    (code, out, log_texts(&err))
}

#[test]
fn usage_error_like_legacy() {
    let ours = usage_run(&our_pvmd());
    assert_eq!(
        ours,
        (
            Some(0),
            String::new(),
            vec![
                "usage: pvmd3 [-ddebugmask] [-nhostname] [hostfile]".to_string(),
                "pvmbailout(0)".to_string()
            ]
        )
    );
    assert_eq!(ours, usage_run(Path::new(LEGACY_PVMD)));
}

#[test]
fn root_refusal_like_legacy() {
    let refuse = |bin: &Path| {
        let tmp = TmpDir::new("root");
        let mut c = pvm_command(bin, tmp.path());
        c.env_remove("PVM_ALLOW_ROOT");
        let child = c.spawn().expect("spawn");
        let (code, out, err) = Proc {
            child,
            name: "pvmd as root".into(),
        }
        .wait(TIMEOUT);
        (code, out, log_texts(&err), addr_file(&tmp).exists())
    };
    let ours = refuse(&our_pvmd());
    if uid() == 0 {
        assert!(
            ours.1.contains("*** Error: PVM is being run as user \"root\" ***!"),
            "{ours:?}"
        );
        assert_eq!(ours, refuse(Path::new(LEGACY_PVMD)));
    } else {
        // Not root: nothing to refuse; the daemon must not print the warning.
        assert!(!ours.1.contains("run as user"), "{ours:?}");
    }
}

#[test]
fn help_and_version_for_people() {
    let tmp = TmpDir::new("help");
    let (code, out, _) = run(&our_pvmd(), &tmp, &["--help"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("usage: pvmd [-d<mask>]"), "{out}");
    let (code, out, _) = run(&our_pvmd(), &tmp, &["--version"], None);
    assert_eq!(code, Some(0));
    assert!(out.contains("3.4.6"), "{out}");
    assert!(!addr_file(&tmp).exists());
}

/// Runs `program` in a private mount namespace where /usr/bin/pvmd is our binary: the Debian
/// libpvm3 starts `/usr/bin/pvmd` (hard-coded), not `$PVM_ROOT/lib/pvmd`.
fn with_our_pvmd_installed(tmp: &TmpDir, program: &Path, stdin: Option<&str>) -> (Option<i32>, String, String) {
    assert!(
        Path::new("/usr/bin/unshare").exists(),
        "unshare (util-linux) is required"
    );
    let script = format!(
        "mount --bind '{}' /usr/bin/pvmd && exec '{}'",
        our_pvmd().display(),
        program.display()
    );
    let sh = Path::new("/usr/bin/unshare");
    let mut c = pvm_command(sh, tmp.path());
    c.args(["-m", "sh", "-c", &script]);
    if stdin.is_some() {
        c.stdin(std::process::Stdio::piped());
    }
    let mut child = c.spawn().expect("spawn unshare");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    Proc {
        child,
        name: format!("{} with our pvmd", program.display()),
    }
    .wait(TIMEOUT)
}

/// The daemon a library started: found through the address file, checked to be our binary,
/// stopped by pid.
fn stop_started_daemon(tmp: &TmpDir) {
    let sock = std::fs::read_to_string(addr_file(tmp)).expect("a daemon wrote the address file");
    let pid = pid_from_sock(&sock).expect("pid in socket name");
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).expect("daemon is running");
    let ours = std::fs::metadata(our_pvmd()).unwrap();
    let is_ours = (exe.dev(), exe.ino()) == (ours.dev(), ours.ino());
    stop_pid(pid);
    assert!(is_ours, "the daemon that was started is not our binary");
    let t = std::time::Instant::now();
    while addr_file(tmp).exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the daemon a library started even if the test fails on the way.
struct StartedDaemon<'a>(&'a TmpDir);

impl Drop for StartedDaemon<'_> {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(addr_file(self.0))
            .ok()
            .and_then(|s| pid_from_sock(&s))
        {
            stop_pid(pid);
        }
    }
}

#[test]
fn legacy_library_starts_our_daemon() {
    let tmp = TmpDir::new("startlib");
    let _guard = StartedDaemon(&tmp);
    let (code, out, err) = with_our_pvmd_installed(&tmp, &c_program("start"), None);
    stop_started_daemon(&tmp);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        "start 0\nmytid 40001\nconfig 0 nhost 1\nexit 0\n",
        "stderr {err}\nlog:\n{}",
        tmp.log()
    );
}

#[test]
fn legacy_console_starts_our_daemon() {
    let tmp = TmpDir::new("startcons");
    let _guard = StartedDaemon(&tmp);
    let (code, out, err) = with_our_pvmd_installed(&tmp, Path::new(LEGACY_CONSOLE), Some("conf\nquit\n"));
    stop_started_daemon(&tmp);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("1 host, 1 data format\n"), "{out}\n{err}");
    assert!(out.ends_with("pvmd still running.\n"), "{out}");
}

fn halt_run(kind: Kind) -> (Option<i32>, Option<i32>, Option<i32>, Vec<String>) {
    use std::os::unix::process::ExitStatusExt;
    let tmp = TmpDir::new(&format!("halt-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let mut server = spawn(&c_program("pingpong"), &tmp, &["serve"]);
    assert!(server.read_line(TIMEOUT).starts_with("tid "));
    let halter = spawn(&c_program("halt"), &tmp, &[]);
    let signal_of = |mut p: Proc| {
        let t = std::time::Instant::now();
        loop {
            if let Some(st) = p.child.try_wait().unwrap() {
                return st.signal();
            }
            assert!(t.elapsed() < TIMEOUT, "{} did not stop after the halt", p.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let halter_sig = signal_of(halter);
    let server_sig = signal_of(server);
    let sock = d.sock.clone();
    let (code, _, _) = d.into_proc().wait(TIMEOUT);
    assert!(
        !addr_file(&tmp).exists() && !Path::new(&sock).exists(),
        "{kind:?} left files"
    );
    let log = log_texts(&tmp.log());
    let tail = log[log.len().saturating_sub(3)..].to_vec();
    (code, halter_sig, server_sig, tail)
}

#[test]
fn halt_stops_daemon_and_tasks_like_legacy() {
    let ours = halt_run(Kind::Ours);
    assert_eq!((ours.0, ours.1, ours.2), (Some(0), Some(15), Some(15)), "{ours:?}");
    assert!(
        ours.3[0].starts_with("dm_halt() from (") && ours.3[0].ends_with("), halting..."),
        "{ours:?}"
    );
    assert_eq!(ours.3[1..], ["work() pvmd halting", "pvmbailout(0)"]);
    assert_eq!(ours, halt_run(Kind::Legacy));
}

fn with_hostfile(kind: Kind, text: &str) -> String {
    let tmp = TmpDir::new(&format!("hostfile-{kind:?}"));
    let hf = tmp.path().join("hostfile");
    std::fs::write(&hf, text).unwrap();
    let d = Pvmd::start(kind, &tmp, &[hf.to_str().unwrap()]);
    let (code, out, err) = run(&c_program("basic"), &tmp, &[], None);
    assert_eq!(code, Some(0), "{out}{err}");
    drop(d);
    out.lines()
        .find(|l| l.starts_with("host "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn hostfile_defaults_apply_to_the_master_like_legacy() {
    let text = "# comment\n* sp=777 ep=/bin\n";
    let ours = with_hostfile(Kind::Ours, text);
    assert!(ours.ends_with(" LINUX64 777 408c41"), "{ours}");
    assert_eq!(ours, with_hostfile(Kind::Legacy, text));
}

/// Runs `exitsend N SIZE [hold]` on a fresh daemon of `kind`; its one output line.
fn exitsend(kind: Kind, args: &[&str]) -> String {
    let tmp = TmpDir::new(&format!("exitsend-{kind:?}"));
    let d = Pvmd::start(kind, &tmp, &[]);
    let (code, out, err) = run(&c_program("exitsend"), &tmp, args, None);
    assert_eq!(code, Some(0), "{kind:?} {args:?}\n{out}{err}\nlog:\n{}", tmp.log());
    drop(d);
    out.trim().to_string()
}

/// "exit notice M ms after the last" -> M.
fn notice_ms(line: &str) -> u64 {
    let m = line.rsplit("notice ").next().and_then(|r| r.split(' ').next());
    m.and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no notice time in {line:?}"))
}

#[test]
fn a_task_that_exits_without_pvm_exit_loses_no_message() {
    // The child sends and returns from main at once: what it wrote may still be in its socket
    // when the daemon sees the process exit. All of it reaches the parent, in order, before
    // the exit notice. (The legacy daemon closes the socket at the exit and loses the rest:
    // e.g. 1930 of 2000 100-byte messages; its counts are printed, not compared.)
    for args in [["2000", "100"], ["200", "4000"], ["20", "1048576"]] {
        let ours = exitsend(Kind::Ours, &args);
        assert!(
            ours.starts_with(&format!("got {0} of {0}, in order 1, exit notice", args[0])),
            "{args:?}: {ours}"
        );
        eprintln!("{args:?}: pvmd-rs: {ours}; legacy: {}", exitsend(Kind::Legacy, &args));
    }
}

#[test]
fn an_exited_task_whose_socket_a_child_holds_is_still_cleaned_up() {
    // The child leaves a background process behind that holds its descriptors (the daemon
    // socket and output pipes) for 5 s: the exit notice still comes once what the child wrote
    // is read (the daemon shuts the socket's read side at the exit), not when the socket
    // closes.
    let ours = exitsend(Kind::Ours, &["50", "1000", "hold"]);
    assert!(ours.starts_with("got 50 of 50, in order 1, exit notice"), "{ours}");
    let ms = notice_ms(&ours);
    assert!(ms < 4000, "the notice waited for the held socket: {ours}");
    eprintln!(
        "pvmd-rs: {ours}; legacy: {}",
        exitsend(Kind::Legacy, &["50", "1000", "hold"])
    );
}
