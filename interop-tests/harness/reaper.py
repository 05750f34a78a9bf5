#!/usr/bin/env python3
"""Run a command as a child subreaper, with a time limit, and leave no process behind.

Legacy pvmd daemonises (its parent exits), so when it dies it is re-parented to PID 1; in
containers PID 1 often never reaps, and dead pvmds stay as zombies that `pgrep pvmd` still
lists.  Marking this process a child subreaper (prctl PR_SET_CHILD_SUBREAPER) makes every
orphaned descendant our child instead, so we reap it.  When the command ends (or the limit
passes), any descendant still alive is killed by PID, then reaped.

usage: reaper.py [--timeout SECONDS] -- CMD [ARGS...]
"""
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def children(pid):
    """PIDs whose parent is `pid` (read from /proc, no external tools)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("latin-1")
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return out


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    args = sys.argv[1:]
    timeout = 600.0
    if args[:1] == ["--timeout"]:
        timeout = float(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("reaper: prctl(PR_SET_CHILD_SUBREAPER) failed; zombies may remain", file=sys.stderr)
    # Forward TERM/INT to the command so that its own cleanup traps run.
    proc = subprocess.Popen(args)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: proc.send_signal(s))
    deadline = time.monotonic() + timeout
    rc = None
    while rc is None:
        rc = proc.poll()
        if rc is None and time.monotonic() > deadline:
            print(f"reaper: time limit {timeout:.0f}s reached, stopping {args[0]}", file=sys.stderr)
            proc.terminate()
            try:
                rc = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            rc = 124
        reap_all()
        time.sleep(0.05)
    # Whatever is left was started (directly or not) by the command: kill by PID, reap.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        left = children(os.getpid())
        if not left:
            break
        print(f"reaper: leftover processes {left}, sending {signal.Signals(sig).name}", file=sys.stderr)
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 3
        while time.monotonic() < end and children(os.getpid()):
            reap_all()
            time.sleep(0.05)
    reap_all()
    return rc


if __name__ == "__main__":
    sys.exit(main())
