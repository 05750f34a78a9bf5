//! The `pvm` console (pvm-console) against the legacy console: the same script through both,
//! against the legacy daemon and against pvmd-rs, outputs equal after masking task ids.

use interop_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the console and tracer once per test process; returns the directory holding them.
pub fn ux_bins() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let st = Command::new(cargo)
            .args(["build", "--quiet", "-p", "pvm-console"])
            .current_dir(&root)
            .status()
            .expect("run cargo build -p pvm-console");
        assert!(st.success(), "cargo build -p pvm-console failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let d = target.join("debug");
        assert!(
            d.join("pvm").exists() && d.join("pvmtrace").exists(),
            "pvm/pvmtrace not built in {}",
            d.display()
        );
        d
    })
    .clone()
}

/// Masks what legitimately differs between runs: task ids (which depend on how many tasks the
/// daemon has seen) and the console's own tid in option values.
fn normalise(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let w: Vec<String> = line
            .split(' ')
            .map(|tok| {
                let t = tok.strip_prefix('t').unwrap_or(tok);
                if t.len() == 5 && t.starts_with('4') && t.chars().all(|c| c.is_ascii_hexdigit()) {
                    if tok.starts_with('t') {
                        "tTID".into()
                    } else {
                        "TID".into()
                    }
                } else if tok.parse::<i64>().is_ok_and(|v| (0x40000..0x80000).contains(&v)) {
                    "TIDDEC".into()
                } else {
                    tok.to_string()
                }
            })
            .collect();
        out.push_str(&w.join(" "));
        out.push('\n');
    }
    out
}

const SCRIPT: &str = "conf
ps
id
version
mstat nohost
pstat t3ffff
echo hello   world
alias foo echo from alias
foo
alias
alias foo
unalias foo
alias
foo
getopt PvmRoute
getopt PvmOutputCode
getopt PvmResvTids
getopt PvmNoReset
setopt PvmRoute 3
setopt Route 2
getopt Nothing
export
export FOO BAR
export
unexport FOO
export
unexport BAR
sig
kill
put
mstat
pstat
spawn
spawn -x
spawn -3 /bin/sleep 2
spawn /no/such/program
add nohost
delete nohost
mstat nohost other
jobs
bogus
help spawn
help ps
trace
trace - send recv
trace
trace + send recv nosuchevent
quit
";

fn run_console(bin: &Path, tmp: &TmpDir) -> String {
    let (code, out, err) = run(bin, tmp, &[], Some(SCRIPT));
    assert_eq!(code, Some(0), "{} failed: {out}\n{err}", bin.display());
    normalise(&out)
}

fn diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut d = String::new();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (
            la.get(i).copied().unwrap_or("<none>"),
            lb.get(i).copied().unwrap_or("<none>"),
        );
        if x != y {
            d.push_str(&format!("line {}:\n- {x}\n+ {y}\n", i + 1));
        }
    }
    d
}

fn same_output(kind: Kind) {
    // Each console gets its own daemon: the script leaves tasks running.
    let tmp = TmpDir::new("ux-console-l");
    let d = Pvmd::start(kind, &tmp, &[]);
    let legacy = run_console(Path::new(LEGACY_CONSOLE), &tmp);
    drop(d);
    let tmp = TmpDir::new("ux-console-o");
    let _d = Pvmd::start(kind, &tmp, &[]);
    let ours = run_console(&ux_bins().join("pvm"), &tmp);
    let d = diff(&legacy, &ours);
    assert!(
        d.is_empty(),
        "console outputs differ on {kind:?} daemon (- legacy, + ours):\n{d}\nours:\n{ours}"
    );
    // The script did something: spawns succeeded and errors were reported.
    assert!(ours.contains("3 successful"), "{ours}");
    assert!(ours.contains("sig: wrong #args"), "{ours}");
}

#[test]
fn ux_console_same_as_legacy_on_legacy_daemon() {
    same_output(Kind::Legacy);
}

#[test]
fn ux_console_same_as_legacy_on_pvmd_rs() {
    same_output(Kind::Ours);
}

#[test]
fn ux_console_extras_and_job_output() {
    let tmp = TmpDir::new("ux-console-x");
    let _d = Pvmd::start(Kind::Legacy, &tmp, &[]);
    let bin = ux_bins().join("pvm");
    let script = "hosts\nmigrate t40001 h2\ncheckpoint t40001\nrestart t40001\nspawn -> /bin/echo hi there\n";
    // Keep stdin open a moment so the job's output arrives before EOF ends the console.
    let mut c = pvm_command(&bin, tmp.path());
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().expect("start pvm");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, script.as_bytes()).expect("write");
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(stdin);
    let (code, out, err) = Proc {
        child,
        name: "pvm".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(" HOST     DTID     ARCH STATUS       OWNER    LOAD GUESTS"),
        "{out}"
    );
    assert!(out.contains("(no scheduler publishes pvm-sched.hosts"), "{out}");
    // A legacy daemon: the pvm-rs calls are refused at once, in plain words.
    for c in ["migrate t40001 -> h2", "checkpoint t40001", "restart t40001"] {
        assert!(out.contains(&format!("{c} ...\n")), "no start line for {c}:\n{out}");
        assert!(
            out.contains(&format!("{c}: not supported by this daemon (a legacy pvmd")),
            "{out}"
        );
    }
    assert!(out.contains("[1]\n1 successful\n"), "{out}");
    let t = out
        .lines()
        .find(|l| l.ends_with("] hi there"))
        .unwrap_or_else(|| panic!("no job output:\n{out}"));
    assert!(t.contains("[1:t4"), "{t}");
    assert!(out.contains("[1] finished"), "{out}");
    // `spawn -@`: a legacy-library program's trace events are printed as they arrive.
    let prog = tmp.path().join("tracee");
    std::fs::write(
        tmp.path().join("tracee.c"),
        "#include <pvm3.h>\nint main(void){pvm_mytid();pvm_exit();return 0;}\n",
    )
    .expect("write");
    let g = Command::new("gcc")
        .arg("-o")
        .arg(&prog)
        .arg(tmp.path().join("tracee.c"))
        .arg("-lpvm3")
        .output()
        .expect("gcc is required");
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let mut c = pvm_command(&bin, tmp.path());
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().expect("start pvm");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, format!("spawn -@ {}\n", prog.display()).as_bytes()).expect("write");
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(stdin);
    let (code, out, err) = Proc {
        child,
        name: "pvm".into(),
    }
    .wait(TIMEOUT);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(" mytid exit MT="), "no trace events:\n{out}");
    assert!(
        !out.contains("End of buffer") && !err.contains("End of buffer"),
        "{out}{err}"
    );
    let (code, help, _) = run(&bin, &tmp, &["--help"], None);
    assert_eq!(code, Some(0));
    assert!(help.contains("\"not supported by this daemon\""), "{help}");
}

/// On a terminal (a pty here): the up arrow recalls `~/.pvm_history`, backspace edits, and
/// commands are appended to the history file.
#[test]
fn ux_console_line_editing_and_history() {
    let tmp = TmpDir::new("ux-console-tty");
    let _d = Pvmd::start(Kind::Legacy, &tmp, &[]);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    std::fs::write(home.join(".pvm_history"), "conf\n").expect("history");
    let py = r#"
import pty, os, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], ['pvm'])
out = b''
def rd(t):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
rd(2)
os.write(fd, b'\x1b[A\r'); rd(1.5)
os.write(fd, b'idd\x7f\r'); rd(1.5)
os.write(fd, b'quit\r'); rd(1.5)
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
"#;
    let mut c = pvm_command(Path::new("timeout"), tmp.path());
    c.args(["-k", "5", "30", "python3", "-c", py])
        .arg(ux_bins().join("pvm"))
        .env("HOME", &home)
        .env("TERM", "xterm");
    let o = c.output().expect("python3 is required for the pty test");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("1 host, 1 data format"),
        "history recall did not run conf:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_end().ends_with("t40001") || l.contains("t4000")),
        "id did not run:\n{out}"
    );
    assert!(out.contains("Console: exit handler called"), "{out}");
    let hist = std::fs::read_to_string(home.join(".pvm_history")).expect("history file");
    assert_eq!(hist, "conf\nconf\nid\nquit\n");
}

/// A worker on our library that ticks every 100 ms (its output goes to the pvmd log) and
/// waits in `pvm_trecv`, where it can park for a checkpoint.
const TICKER: &str = r#"
#include <stdio.h>
#include <sys/time.h>
#include "pvm3.h"
int main(void) {
    int n = 0;
    struct timeval tv;
    pvm_mytid();
    for (;;) {
        tv.tv_sec = 0;
        tv.tv_usec = 100000;
        if (pvm_trecv(-1, -1, &tv) > 0) break;
        printf("tick %d\n", ++n);
        fflush(stdout);
    }
    pvm_exit();
    return 0;
}
"#;

fn console_script(tmp: &TmpDir, script: &str) -> String {
    let (code, out, err) = run(&ux_bins().join("pvm"), tmp, &[], Some(script));
    assert_eq!(code, Some(0), "{out}\n{err}\nlog:\n{}", tmp.log());
    out
}

/// Ticks logged by task `tid`, in order.
fn ticks(log: &str, tid: &str) -> Vec<u32> {
    let p = format!("[{tid}] tick ");
    log.lines()
        .filter_map(|l| l.split_once(&p).and_then(|(_, n)| n.trim().parse().ok()))
        .collect()
}

/// On pvmd-rs, one host: `checkpoint` of a running task, its kill, `restart` as the same tid
/// from the checkpoint (its tick counter rolls back), and `migrate` refused in the documented
/// words (the only host is where it runs; an unknown host is no host).
#[test]
fn ux_console_checkpoint_restart_migrate_on_pvmd_rs() {
    let pvmd = our_pvmd();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf();
    let st = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--quiet", "-p", "pvm-migration", "--bin", "pvm-migrate"])
        .current_dir(&root)
        .status()
        .expect("cargo build pvm-migrate");
    assert!(
        st.success() && pvmd.with_file_name("pvm-migrate").exists(),
        "pvm-migrate not built"
    );
    let tmp = TmpDir::new("people-console-ckpt");
    let src = tmp.path().join("ticker.c");
    std::fs::write(&src, TICKER).expect("write");
    let exe = tmp.path().join("ticker");
    let shim = interop_tests::shim::shim_dir();
    let g = Command::new("gcc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(root.join("include"))
        .arg("-L")
        .arg(&shim)
        .arg(format!("-Wl,-rpath,{}", shim.display()))
        .arg("-l:libpvm3.so.3")
        .output()
        .expect("gcc is required");
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let _d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let out = console_script(&tmp, &format!("spawn {}\n", exe.display()));
    let tid = out
        .lines()
        .skip_while(|l| !l.contains("1 successful"))
        .nth(1)
        .map(|l| l.trim().to_string())
        .filter(|t| t.starts_with("t4"))
        .unwrap_or_else(|| panic!("no tid from spawn:\n{out}"));
    std::thread::sleep(std::time::Duration::from_millis(600));
    let out = console_script(&tmp, &format!("checkpoint {tid}\n"));
    assert!(out.contains(&format!("checkpoint {tid} ...\n")), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("checkpoint {tid}: ")))
        .unwrap_or_else(|| panic!("no result line:\n{out}\nlog:\n{}", tmp.log()));
    assert!(
        line.contains(": epoch 1, task running again ("),
        "{line}\nlog:\n{}",
        tmp.log()
    );
    assert!(line.ends_with(" s)"), "{line}");
    let at_ckpt = ticks(&tmp.log(), &tid).last().copied().unwrap_or(0);
    std::thread::sleep(std::time::Duration::from_millis(600));
    // Kill it and wait until the pvmd knows it is gone.
    console_script(&tmp, &format!("sig 9 {tid}\n"));
    let deadline = std::time::Instant::now() + TIMEOUT;
    while console_script(&tmp, "ps -a\n").contains(&tid) {
        assert!(std::time::Instant::now() < deadline, "{tid} not gone after SIGKILL");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let before = ticks(&tmp.log(), &tid);
    assert!(
        before.last().copied().unwrap_or(0) > at_ckpt,
        "no ticks after the checkpoint: {before:?}"
    );
    let out = console_script(&tmp, &format!("restart {tid}\nps -a\n"));
    assert!(
        out.contains(&format!("restart {tid}: epoch 1, running again as {tid} (")),
        "{out}\nlog:\n{}",
        tmp.log()
    );
    assert!(
        out.lines().filter(|l| l.contains(&tid)).count() >= 2,
        "not in ps after restart:\n{out}"
    );
    // Ticks resume from the checkpoint: a number logged before the kill comes again.
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let all = ticks(&tmp.log(), &tid);
        let after = &all[before.len()..];
        if let Some(first) = after.first() {
            assert!(
                *first <= before.last().copied().unwrap_or(0) && *first > at_ckpt.saturating_sub(3),
                "ticks after the restart {after:?} do not resume from the checkpoint (at {at_ckpt}, killed at {:?})",
                before.last()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ticks after restart:\n{}",
            tmp.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // migrate on a single host: refused with the daemon's reason.
    let host = console_script(&tmp, "conf\n")
        .lines()
        .skip_while(|l| !l.contains("DTID"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .expect("conf row");
    let out = console_script(
        &tmp,
        &format!("migrate {tid} {host}\nmigrate {tid} nosuchhost\nkill {tid}\n"),
    );
    assert!(
        out.contains(&format!(
            "migrate {tid} -> {host}: refused, Bad parameter: {tid} already runs on host 1 ("
        )),
        "{out}\nlog:\n{}",
        tmp.log()
    );
    assert!(
        out.contains(&format!("migrate {tid} -> nosuchhost: refused, No such host (")),
        "{out}"
    );
}

/// `hosts` shows what a scheduler publishes in `pvm-sched.hosts` (docs/console.md): here a C
/// program on the legacy library writes a persistent entry for the only host.
#[test]
fn ux_console_hosts_shows_the_scheduler_entry() {
    let tmp = TmpDir::new("people-console-hosts");
    let _d = Pvmd::start(Kind::Ours, &tmp, &[]);
    let src = tmp.path().join("pub.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <pvm3.h>
int main(void) {
    char text[256];
    int me = pvm_mytid(), cc;
    sprintf(text, "pvm-sched.hosts 1\n# DTID OWNER LOAD GUESTS\n%x busy* 0.75 t40009,t4000a(held) extra\nbad\n", pvm_tidtohost(me));
    pvm_initsend(PvmDataDefault);
    pvm_pkstr(text);
    cc = pvm_putinfo("pvm-sched.hosts", pvm_getsbuf(), PvmMboxPersistent | PvmMboxOverWritable);
    printf("putinfo %d\n", cc);
    pvm_exit();
    return cc < 0;
}
"#,
    )
    .expect("write");
    let exe = tmp.path().join("pub");
    let g = Command::new("gcc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-lpvm3")
        .output()
        .expect("gcc is required");
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let out = console_script(&tmp, "hosts\n");
    assert!(out.contains("(no scheduler publishes pvm-sched.hosts"), "{out}");
    let (code, pout, perr) = run(&exe, &tmp, &[], None);
    assert_eq!(code, Some(0), "{pout}\n{perr}");
    let out = console_script(&tmp, "hosts\n");
    let row = out
        .lines()
        .find(|l| l.contains(" 40000 "))
        .unwrap_or_else(|| panic!("no host row:\n{out}"));
    assert!(row.ends_with(" busy*    0.75 t40009,t4000a(held)"), "{row:?}");
    assert!(!out.contains("no scheduler publishes"), "{out}");
}

/// On a terminal the long commands draw a ticking status line (redrawn in place with
/// `\r` + erase-line) instead of the plain start line, then print the result line.
#[test]
fn ux_console_progress_ticks_on_a_terminal() {
    let tmp = TmpDir::new("people-console-pty");
    let _d = Pvmd::start(Kind::Legacy, &tmp, &[]);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let py = r#"
import pty, os, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], ['pvm'])
out = b''
def rd(t):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
rd(2)
os.write(fd, b'checkpoint t40001\r'); rd(1.5)
os.write(fd, b'quit\r'); rd(1.5)
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
"#;
    let mut c = pvm_command(Path::new("timeout"), tmp.path());
    c.args(["-k", "5", "30", "python3", "-c", py])
        .arg(ux_bins().join("pvm"))
        .env("HOME", &home)
        .env("TERM", "xterm");
    let o = c.output().expect("python3 is required for the pty test");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("\r\x1b[Kcheckpoint t40001 ... 0.0"),
        "no ticking line on the terminal:\n{out:?}"
    );
    assert!(
        !out.contains("checkpoint t40001 ...\r\n"),
        "plain start line on a terminal:\n{out:?}"
    );
    assert!(
        out.contains("checkpoint t40001: not supported by this daemon"),
        "{out:?}"
    );
}

/// Three namespace hosts of pvmd-rs: a task spawned on h2 is moved to h3 by `migrate` in a
/// console on h2; the console names the new host, `ps -a` lists the same tid there, and the
/// task runs on (its output, ticks, keeps reaching the master pvmd's log).
#[test]
fn ux_console_migrate_across_hosts() {
    use interop_tests::netns::Cluster;
    // Descriptors this test process inherited without close-on-exec (e.g. a /dev/null from
    // whatever started cargo) would reach the daemons and their tasks, and CRIU cannot dump a
    // task holding a file opened in another mount namespace (`ip netns exec` makes one per
    // host): not ours to pass on.
    for fd in 3..1024 {
        // SAFETY: F_SETFD on a descriptor number; a closed one just returns EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let c = Cluster::new("people-cmig", 3);
    let bin = our_pvmd();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("root")
        .to_path_buf();
    let st = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--quiet", "-p", "pvm-migration", "--bin", "pvm-migrate"])
        .current_dir(&root)
        .status()
        .expect("cargo build pvm-migrate");
    assert!(
        st.success() && bin.with_file_name("pvm-migrate").exists(),
        "pvm-migrate not built"
    );
    let src = c.dir.path().join("ticker.c");
    std::fs::write(&src, TICKER).expect("write");
    let exe = c.dir.path().join("ticker");
    let shim = interop_tests::shim::shim_dir();
    let g = Command::new("gcc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(root.join("include"))
        .arg("-L")
        .arg(&shim)
        .arg(format!("-Wl,-rpath,{}", shim.display()))
        .arg("-l:libpvm3.so.3")
        .output()
        .expect("gcc is required");
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let hf = c.dir.path().join("hostfile");
    let hosts: Vec<String> = (1..=3).map(|k| c.host(k).ip.clone()).collect();
    std::fs::write(
        &hf,
        format!(
            "{}\n{} dx={}\n{} dx={}\n",
            hosts[0],
            hosts[1],
            bin.display(),
            hosts[2],
            bin.display()
        ),
    )
    .expect("hostfile");
    let mut cmd = c.command(1, &bin);
    cmd.arg(format!("-n{}", hosts[0]))
        .arg(&hf)
        .stderr(std::process::Stdio::null());
    let mut master = Proc {
        child: cmd.spawn().expect("start master"),
        name: "master pvmd".into(),
    };
    let line = master.read_line(TIMEOUT);
    assert!(line.starts_with('/'), "master printed {line:?}\n{}", c.logs());
    let console = |k: usize, script: &str| -> String {
        let mut cmd = c.command(k, &ux_bins().join("pvm"));
        cmd.stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("console");
        let mut i = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut i, script.as_bytes()).expect("script");
        drop(i);
        let (code, out, err) = Proc {
            child,
            name: format!("console on h{k}"),
        }
        .wait(TIMEOUT);
        assert_eq!(code, Some(0), "{out}\n{err}\n{}", c.logs());
        out
    };
    assert!(
        c.wait_for(std::time::Duration::from_secs(30), || console(1, "conf\n")
            .contains("3 hosts")),
        "the slaves never joined\n{}",
        c.logs()
    );
    let out = console(1, &format!("spawn -{} {}\n", hosts[1], exe.display()));
    let tid = out
        .lines()
        .skip_while(|l| !l.contains("1 successful"))
        .nth(1)
        .map(|l| l.trim().to_string())
        .filter(|t| t.starts_with("t8"))
        .unwrap_or_else(|| panic!("no tid of h2 from spawn:\n{out}\n{}", c.logs()));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = console(2, &format!("migrate {tid} {}\nps -a\n", hosts[2]));
    assert!(out.contains(&format!("migrate {tid} -> {} ...\n", hosts[2])), "{out}");
    if !out.contains(&format!(
        "migrate {tid} -> {h}: now on {h} (pvmd c0000), same tid (",
        h = hosts[2]
    )) {
        // CRIU's own log, when the refusal names it.
        let crlog = out
            .split("CRIU log ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.lines().rev().take(30).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        panic!("{out}\n{}\nCRIU log (last lines, reversed):\n{crlog}", c.logs());
    }
    let row = out
        .lines()
        .find(|l| l.contains(&tid[1..]) && !l.contains("migrate"))
        .unwrap_or_else(|| panic!("{tid} not in ps -a:\n{out}"));
    assert!(row.trim_start().starts_with(&hosts[2]), "{row}");
    // Still alive: it goes on ticking after the move.
    let n = ticks(&c.log(1), &tid).len();
    assert!(
        c.wait_for(std::time::Duration::from_secs(10), || ticks(&c.log(1), &tid).len()
            > n + 3),
        "no ticks after the move\n{}",
        c.logs()
    );
    console(1, &format!("kill {tid}\n"));
    drop(master);
}
