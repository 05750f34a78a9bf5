#!/usr/bin/env python3
"""Turn raw captures of legacy PVM traffic into the project's `.hex` vector format, and count codes.

  pvmcap.py strace DIR OUT.hex [--title TEXT] [--pvmd NAME] [--max-bytes N]
      DIR holds `strace -ff -ttt -xx -s BIG -o DIR/tr` output (one file per process) of a pvmd
      started under strace (so every task it spawns is traced too) and of programs started from
      the shell.  Rebuilds the byte stream of every task<->pvmd connection (pvmd side: the fds it
      accept()ed) and of every direct task<->task connection (task side), per direction, and
      splits it into TDFRAGHDR frames.  Task-side copies of task<->pvmd streams are skipped
      (the pvmd side already holds the same bytes).
  pcap2hex PCAP[,PCAP...] OUT.hex [--title TEXT] [--max-bytes N]
      UDP payloads (pvmd<->pvmd, DDFRAGHDR) and reassembled TCP streams (direct routes across
      hosts, TDFRAGHDR frames) from Ethernet/IPv4 (or Linux cooked) pcaps, merged in time order.
  pcaptrim IN OUT --tcp-budget N
      Copy a pcap, keeping every UDP packet and TCP packets without payload, and TCP payload
      packets only while their flow direction has carried fewer than N payload bytes.
  codes [--markdown] FILE.hex...
      Count message codes per file: family, name and number of first fragments (message starts)
      among the frames in the file, non-zero "unused" header bytes, and over all files the codes
      of each family never seen.  --markdown: one table row per file instead.

`.hex` format (pvm-proto/tests/vectors/README.md): `# title`, then per frame
`## <label> (<n> bytes)` and lowercase hex, 32 bytes per line.  Frames are kept in capture order;
when --max-bytes is exceeded, further frames are written only if their (direction, code, flags)
kind has not been written yet; a comment after the title says how many were left out and counts
the message starts of the whole capture.
"""
import glob
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CODES_RS = os.path.join(HERE, "..", "..", "pvm-proto", "src", "codes.rs")
SYSCTX_DG = 0x7FFFC
SYSCTX_TC = 0x7FFFF
SYSCTX_TM = 0x7FFFE


def load_codes():
    """Code -> name for TM_/DM_/TC_/SM_ and the group server, read from codes.rs (one source)."""
    sysc, gs = {}, {}
    text = open(CODES_RS).read()
    for m in re.finditer(r'=\s*(0x[0-9a-fA-F_]+)u32\s*=>\s*"([A-Z]+_[A-Z0-9]+)"', text):
        sysc[int(m.group(1).replace("_", ""), 16)] = m.group(2)
    for m in re.finditer(r'=\s*(\d+)\s*=>\s*"(GS_[A-Z0-9]+)"', text):
        gs[int(m.group(1))] = m.group(2)
    return sysc, gs


SYSC, GS = load_codes()


def tag_name(tag, ctx):
    if tag in SYSC:
        return SYSC[tag]
    if ctx == SYSCTX_DG and tag in GS:
        return GS[tag]
    if 0x80010000 <= tag <= 0x8004FFFF:
        return "SYS_%08x" % tag
    return "user:%d" % (tag - (1 << 32) if tag & 0x80000000 else tag)


def family(name):
    if name.startswith("user:"):
        return "user"
    return name.split("_", 1)[0]


def tidstr(t):
    return "t%x" % t


class HexWriter:
    def __init__(self, path, title, max_bytes):
        self.path, self.title, self.max_bytes = path, title, max_bytes
        self.frames = []  # (label, bytes)
        self.total = 0
        self.kinds = set()
        self.dropped = 0
        self.all_counts = {}  # message starts per code name, including frames left out

    def add(self, label, kind, data):
        if len(data) >= 48 and data[12] & 1:
            name = tag_name(*struct.unpack(">II", data[20:28]))
            self.all_counts[name] = self.all_counts.get(name, 0) + 1
        if self.max_bytes and self.total + len(data) > self.max_bytes and kind in self.kinds:
            self.dropped += 1
            return
        self.kinds.add(kind)
        self.total += len(data)
        self.frames.append((label, data))

    def write(self):
        """Title first, then notes (also `# ` lines, so that readers of the vectors format that
        skip comments see only frames after them), then the frames."""
        with open(self.path, "w") as f:
            f.write("# %s\n" % self.title)
            if self.all_counts:
                f.write("# message starts in the whole capture, including frames left out: %s\n"
                        % ", ".join("%s=%d" % kv for kv in sorted(self.all_counts.items())))
            if self.dropped:
                f.write("# %d frames left out to keep the file small (each left-out frame's direction, code and"
                        " flags also occur in a frame kept)\n" % self.dropped)
            for label, data in self.frames:
                f.write("## %s (%d bytes)\n" % (label, len(data)))
                h = data.hex()
                for i in range(0, len(h), 64):
                    f.write(h[i:i + 64] + "\n")
        return len(self.frames)


class StreamSplitter:
    """Splits one direction of a stream into TDFRAGHDR frames, tracking the code of each message
    per source tid so that continuation fragments can be named."""

    def __init__(self, direction, out):
        self.direction, self.out = direction, out
        self.buf = bytearray()
        self.cur = {}  # src tid -> name of the message being received
        self.broken = False

    def feed(self, data):
        if self.broken:
            return
        self.buf += data
        while len(self.buf) >= 16:
            dst, src, ln, flags = struct.unpack(">IIIB", bytes(self.buf[:13]))
            if ln > 16 << 20:
                self.out.add("%s: stream lost sync (len %d)" % (self.direction, ln), ("sync",), bytes(self.buf[:16]))
                self.broken = True
                return
            if len(self.buf) < 16 + ln:
                return
            frame = bytes(self.buf[:16 + ln])
            del self.buf[:16 + ln]
            self.emit(frame, dst, src, flags)

    def emit(self, frame, dst, src, flags):
        som, eom = flags & 1, flags & 2
        if som and len(frame) >= 48:
            enc, tag, ctx = struct.unpack(">III", frame[16:28])
            name = tag_name(tag, ctx)
            extra = ""
            if family(name) == "user":
                extra = " ctx=%#x enc=%#x" % (ctx, enc)
            label = "%s %s %s->%s%s" % (self.direction, name, tidstr(src), tidstr(dst), extra)
            self.cur[src] = name
        else:
            name = self.cur.get(src, "?")
            label = "%s cont. of %s %s->%s" % (self.direction, name, tidstr(src), tidstr(dst))
        fl = "" if flags == 3 else " flags=%#x" % flags
        if eom:
            self.cur.pop(src, None)
        self.out.add(label + fl, (self.direction.split()[0], name, flags), frame)


# ---- strace -------------------------------------------------------------------------------

STR = r'"((?:[^"\\]|\\.)*)"'


def unescape(s):
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x":
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            esc = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "\\": 92, '"': 34, "0": 0}
            out.append(esc.get(n, ord(n)))
            i += 2
            continue
        out += c.encode("latin-1")
        i += 1
    return bytes(out)


LINE = re.compile(r"^(\d+\.\d+) (\w+)\((.*)\) += (-?\d+|\?)(.*)$")


def parse_strace_file(path):
    """Yield (time, syscall, args, ret) for complete lines (-ff output has no interleaving)."""
    pend = None
    for raw in open(path, encoding="latin-1"):
        raw = raw.rstrip("\n")
        if raw.endswith("<unfinished ...>"):
            pend = raw[: -len("<unfinished ...>")].rstrip()
            continue
        m = re.match(r"^(\d+\.\d+) <\.\.\. \w+ resumed>(.*)$", raw)
        if m and pend is not None:
            raw = pend + m.group(2)
            pend = None
        m = LINE.match(raw)
        if not m:
            continue
        ret = m.group(4)
        yield float(m.group(1)), m.group(2), m.group(3), (int(ret) if ret != "?" else -1)


def sun_path(args):
    m = re.search(r"sun_path=" + STR, args)
    return unescape(m.group(1)).decode("latin-1") if m else None


def data_of(call, args, ret):
    if call in ("read", "write", "recvfrom", "sendto", "recv", "send"):
        m = re.match(r"\d+, " + STR, args)
        if not m:
            return b""
        if args[m.end():].startswith("..."):
            raise ValueError("strace string truncated: raise -s")
        return unescape(m.group(1))[: max(ret, 0)]
    if call in ("readv", "writev", "sendmsg", "recvmsg"):
        data = b"".join(unescape(x) for x in re.findall(r"iov_base=" + STR, args))
        return data[: max(ret, 0)]
    return b""


def cmd_strace(d, out_path, title, pvmd_name, max_bytes):
    files = sorted(glob.glob(os.path.join(d, "tr.*")), key=lambda p: int(p.rsplit(".", 1)[1]))
    events = []  # (time, pid, call, args, ret)
    prog, parent = {}, {}
    for p in files:
        pid = int(p.rsplit(".", 1)[1])
        for t, call, args, ret in parse_strace_file(p):
            if call == "execve" and ret == 0:
                prog[pid] = os.path.basename(unescape(re.match(STR, args).group(1)).decode("latin-1"))
            if call in ("clone", "clone3", "fork", "vfork") and ret > 0:
                parent[ret] = pid
            events.append((t, pid, call, args, ret))
    events.sort(key=lambda e: e[0])

    def program(pid):
        seen = set()
        while pid not in prog and pid in parent and pid not in seen:
            seen.add(pid)
            pid = parent[pid]
        return prog.get(pid, "?")

    # Socket paths the pvmds listen on: a task connecting there is the task side of a td stream.
    pvmd_paths = set()
    for t, pid, call, args, ret in events:
        if call == "bind" and program(pid) == pvmd_name:
            sp = sun_path(args)
            if sp:
                pvmd_paths.add(sp)
    out = HexWriter(out_path, title, max_bytes)
    streams = {}  # (pid, fd) -> (StreamSplitter in, StreamSplitter out) or None (ignored fd)
    for t, pid, call, args, ret in events:
        pg = program(pid)
        fdm = re.match(r"(\d+)", args)
        fd = int(fdm.group(1)) if fdm else -1
        if call in ("accept", "accept4") and ret >= 0:
            if pg == pvmd_name:
                if "AF_UNIX" in args or "AF_INET" not in args:
                    streams[(pid, ret)] = (StreamSplitter("task->pvmd", out), StreamSplitter("pvmd->task", out))
            else:
                kind = "unix" if "AF_UNIX" in args else "tcp"
                streams[(pid, ret)] = (StreamSplitter("direct(%s) in@%s" % (kind, pg), out),
                                       StreamSplitter("direct(%s) out@%s" % (kind, pg), out))
        elif call == "close" and (pid, fd) in streams:
            del streams[(pid, fd)]
        elif (pid, fd) in streams and ret > 0:
            sin, sout = streams[(pid, fd)]
            data = data_of(call, args, ret)
            if call in ("read", "readv", "recvfrom", "recvmsg", "recv"):
                sin.feed(data)
            elif call in ("write", "writev", "sendto", "sendmsg", "send"):
                sout.feed(data)
    n = out.write()
    print("%s: %d frames (%d left out)" % (out_path, n, out.dropped))


# ---- pcap ---------------------------------------------------------------------------------

def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise ValueError("not a pcap file: %s" % path)
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    pkts = []
    while off + 16 <= len(data):
        ts, tu, incl, orig = struct.unpack(e + "IIII", data[off:off + 16])
        pkts.append((data[off:off + 16], data[off + 16:off + 16 + incl], linktype))
        off += 16 + incl
    return data[:24], pkts, e


class Defrag:
    """Reassembles IPv4 fragments: pvmd datagrams (up to 4080 bytes) exceed the 1500-byte MTU
    of the namespace links, so most large ones arrive in pieces."""

    def __init__(self):
        self.parts = {}  # (src, dst, proto, id) -> {offset: bytes}, total length once known

    def feed(self, ip):
        """The whole IPv4 packet (header + payload) once complete, else None."""
        ihl = (ip[0] & 15) * 4
        frag = struct.unpack(">H", ip[6:8])[0]
        mf, off = frag & 0x2000, (frag & 0x1FFF) * 8
        if not mf and off == 0:
            return ip
        key = (ip[12:16], ip[16:20], ip[9], ip[4:6])
        tot = struct.unpack(">H", ip[2:4])[0]
        st = self.parts.setdefault(key, {"pieces": {}, "end": None, "hdr": None})
        st["pieces"][off] = ip[ihl:tot]
        if off == 0:
            st["hdr"] = ip[:ihl]
        if not mf:
            st["end"] = off + tot - ihl
        if st["end"] is None or st["hdr"] is None:
            return None
        data, pos = b"", 0
        for o in sorted(st["pieces"]):
            if o > pos:
                return None  # a hole: wait for more
            data = data[:o] + st["pieces"][o]
            pos = len(data)
        if pos < st["end"]:
            return None
        del self.parts[key]
        hdr = bytearray(st["hdr"])
        hdr[2:4] = struct.pack(">H", len(hdr) + len(data))
        hdr[6:8] = b"\0\0"
        return bytes(hdr) + data


def ipv4(frame, linktype, defrag=None):
    """(proto, src, sport, dst, dport, payload, tcp_seq, tcp_flags) or None (also for a fragment
    of a packet not yet complete when `defrag` is given)."""
    if linktype == 1:  # Ethernet
        if len(frame) < 14 or frame[12:14] != b"\x08\x00":
            return None
        ip = frame[14:]
    elif linktype == 113:  # Linux cooked
        ip = frame[16:]
    else:
        return None
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    if defrag is not None:
        ip = defrag.feed(ip)
        if ip is None:
            return None
    elif struct.unpack(">H", ip[6:8])[0] & 0x3FFF:
        return ("frag", ".".join(map(str, ip[12:16])), 0, ".".join(map(str, ip[16:20])), 0, b"", 0, 0)
    ihl = (ip[0] & 15) * 4
    tot = struct.unpack(">H", ip[2:4])[0]
    proto = ip[9]
    src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    l4 = ip[ihl:tot]
    if proto == 17 and len(l4) >= 8:
        sp, dp = struct.unpack(">HH", l4[:4])
        return ("udp", src, sp, dst, dp, l4[8:], 0, 0)
    if proto == 6 and len(l4) >= 20:
        sp, dp, seq = struct.unpack(">HHI", l4[:8])
        doff = (l4[12] >> 4) * 4
        return ("tcp", src, sp, dst, dp, l4[doff:], seq, l4[13])
    return None


def cmd_pcap2hex(paths, out_path, title, max_bytes):
    pkts = []
    for path in paths.split(","):
        _, pp, e = read_pcap(path)
        # sort key: capture time (seconds, fraction) from the record header
        pkts += [(struct.unpack(e + "II", h[:8]), i, (h, fr, lt)) for i, (h, fr, lt) in enumerate(pp)]
    pkts = [p for _, _, p in sorted(pkts, key=lambda x: (x[0], x[1]))]
    out = HexWriter(out_path, title, max_bytes)
    defrag = Defrag()
    cur = {}  # (src ep, src tid) -> name, for continuation fragments
    tcp = {}  # (src ep, dst ep) -> [next seq, StreamSplitter]
    for _hdr, frame, lt in pkts:
        p = ipv4(frame, lt, defrag)
        if not p:
            continue
        proto, src, sp, dst, dp, pl, seq, tfl = p
        a, b = "%s:%d" % (src, sp), "%s:%d" % (dst, dp)
        if proto == "udp":
            if len(pl) < 16:
                continue
            dtid, stid, dseq, dack, fl = struct.unpack(">IIHHB", pl[:13])
            what = []
            if fl & 0x04 or fl & 0x08:
                what.append("seq=%d" % dseq)
            if fl & 0x10:
                what.append("ack=%d" % dack)
            if fl & 0x01 and len(pl) >= 48:
                enc, tag, ctx = struct.unpack(">III", pl[16:28])
                name = tag_name(tag, ctx)
                cur[(a, stid)] = name
            elif fl & 0x04:
                name = "cont. of " + cur.get((a, stid), "?")
            else:
                name = {0x10: "ACK", 0x08: "FIN", 0x18: "FIN|ACK"}.get(fl & 0x18, "ctl")
            if fl & 0x02:
                cur.pop((a, stid), None)
            label = "udp %s->%s %s %s->%s flags=%#04x %s" % (a, b, name, tidstr(stid), tidstr(dtid), fl,
                                                             " ".join(what))
            out.add(label.rstrip(), ("udp", name.replace("cont. of ", "+"), fl & 0x07 | (fl & 0x18)), pl)
        else:
            key = (a, b)
            if tfl & 0x02:  # SYN
                tcp[key] = [(seq + 1) & 0xFFFFFFFF, StreamSplitter("tcp %s->%s" % (a, b), out)]
                continue
            if not pl or key not in tcp:
                continue
            st = tcp[key]
            if seq != st[0]:
                continue  # retransmission or gap: the first copy already counted
            st[0] = (seq + len(pl)) & 0xFFFFFFFF
            st[1].feed(pl)
    n = out.write()
    print("%s: %d frames (%d left out)" % (out_path, n, out.dropped))


def cmd_pcaptrim(inp, outp, budget):
    hdr, pkts, e = read_pcap(inp)
    used, kept, dropped = {}, 0, 0
    with open(outp, "wb") as f:
        f.write(hdr)
        for h, frame, lt in pkts:
            p = ipv4(frame, lt)
            if p and p[0] == "tcp" and p[5]:
                k = (p[1], p[2], p[3], p[4])
                if used.get(k, 0) >= budget:
                    dropped += 1
                    continue
                used[k] = used.get(k, 0) + len(p[5])
            f.write(h + frame)
            kept += 1
    print("%s: kept %d packets, dropped %d TCP payload packets over the %d-byte budget" % (outp, kept, dropped, budget))


# ---- code census --------------------------------------------------------------------------

HDR = re.compile(r"^## (.*) \((\d+) bytes\)$")


GARBAGE = {}  # file -> {what: count} of frames with non-zero bytes where the format says "unused"


def census(path):
    """name -> count of first fragments (message starts) in a .hex file, by reading the bytes.
    Also notes, per file, frames whose unused header bytes are not zero (uninitialised memory
    in the C implementation): fragment header 13..15, message header 12..15 and 24..31."""
    counts = {}
    garbage = GARBAGE.setdefault(path, {})
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        m = HDR.match(lines[i])
        i += 1
        if not m:
            continue
        label, n = m.group(1), int(m.group(2))
        hx = ""
        while i < len(lines) and lines[i] and not lines[i].startswith("#"):
            hx += lines[i]
            i += 1
        data = bytes.fromhex(hx)
        if len(data) != n or len(data) < 48:
            continue
        som = data[12] & 1
        if any(data[13:16]):
            garbage["fraghdr[13..15]"] = garbage.get("fraghdr[13..15]", 0) + 1
        if som and any(data[28:32]):
            garbage["msghdr[12..15]"] = garbage.get("msghdr[12..15]", 0) + 1
        if som and any(data[40:48]):
            garbage["msghdr[24..31]"] = garbage.get("msghdr[24..31]", 0) + 1
        if not som:
            continue
        tag, ctx = struct.unpack(">II", data[20:28])
        name = tag_name(tag, ctx)
        counts[name] = counts.get(name, 0) + 1
    return counts


def cmd_codes_markdown(paths):
    """One table row per file: the codes whose messages start in it (counted from the bytes)."""
    print("| file | message starts in the file (code x count) | non-zero unused bytes |")
    print("|---|---|---|")
    for p in paths:
        c = census(p)
        fams = {}
        for k, v in c.items():
            fams.setdefault(family(k), []).append((k, v))
        parts = []
        for fam in ("TM", "DM", "TC", "SM", "GS"):
            if fam in fams:
                parts.append(" ".join("%s×%d" % kv for kv in sorted(fams[fam])))
        if "user" in fams:
            parts.append("user messages×%d" % sum(v for _, v in fams["user"]))
        g = GARBAGE.get(p) or {}
        print("| %s | %s | %s |" % (os.path.basename(p), "; ".join(parts) or "-",
                                     ", ".join("%s: %d" % kv for kv in sorted(g.items())) or "-"))


def cmd_codes(paths):
    allc = {}
    for p in paths:
        c = census(p)
        fams = {}
        for k, v in c.items():
            fams.setdefault(family(k), []).append("%s×%d" % (k, v))
            allc[k] = allc.get(k, 0) + v
        print("%s:" % os.path.basename(p))
        for fam in sorted(fams):
            print("  %s: %s" % (fam, ", ".join(sorted(fams[fam]))))
        g = GARBAGE.get(p)
        if g:
            print("  non-zero unused bytes: %s" % ", ".join("%s in %d frames" % kv for kv in sorted(g.items())))
    print("ALL:")
    for fam in ("TM", "DM", "TC", "SM", "GS"):
        seen = sorted(k for k in allc if family(k) == fam)
        known = sorted(set(SYSC.values()) | set(GS.values()))
        known = [k for k in known if family(k) == fam]
        print("  %s seen (%d/%d): %s" % (fam, len(seen), len(known), " ".join(seen)))
        missing = [k for k in known if k not in allc]
        print("  %s never seen: %s" % (fam, " ".join(missing) or "-"))
    users = sum(v for k, v in allc.items() if family(k) == "user")
    print("  user messages: %d" % users)


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__)
        return 2

    def opt(name, default=None):
        if name in a:
            i = a.index(name)
            v = a[i + 1]
            del a[i:i + 2]
            return v
        return default

    title = opt("--title", "capture")
    max_bytes = int(opt("--max-bytes", "0"))
    pvmd = opt("--pvmd", "pvmd")
    budget = int(opt("--tcp-budget", "65536"))
    cmd = a.pop(0)
    if cmd == "strace":
        cmd_strace(a[0], a[1], title, pvmd, max_bytes)
    elif cmd == "pcap2hex":
        cmd_pcap2hex(a[0], a[1], title, max_bytes)
    elif cmd == "pcaptrim":
        cmd_pcaptrim(a[0], a[1], budget)
    elif cmd == "codes":
        if "--markdown" in a:
            a.remove("--markdown")
            cmd_codes_markdown(a)
        else:
            cmd_codes(a)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
