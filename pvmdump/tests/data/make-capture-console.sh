#!/bin/bash
# Regenerates legacy-2host-console.pcap: the set-up of make-capture.sh (own namespaces pvdx-h1
# and pvdx-h2, 10.234.0.1/.2, so both scripts can run at once), pvdping, then console commands
# that make the pvmds talk about tasks and hosts: ps -a (DM_TASK/DM_TASKACK), mstat and pstat
# (DM_PSTAT), a remote spawn with output collected by the console (DM_EXEC with argv and an
# output tid; task-output records TO_NEW, data, EOF), sig and kill (DM_SENDSIG), delete and
# add of h2. Needs root, tcpdump, gcc, pvm and pvm-dev. Everything it starts is stopped by PID
# and the namespaces are deleted on exit, also on failure.
set -eu
OUT=${1:-$(cd "$(dirname "$0")" && pwd)/legacy-2host-console.pcap}
SRC=$(cd "$(dirname "$0")" && pwd)/pvdping.c
W=$(mktemp -d /tmp/pvdx.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.5
  # pvmds fork into the background; they were found by their PVM_TMP below.
  for f in "$W"/h*/pids; do [ -f "$f" ] && kill $(cat "$f") 2>/dev/null; done
  ip netns pids pvdx-h1 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns pids pvdx-h2 2>/dev/null | xargs -r kill 2>/dev/null
  sleep 0.3
  ip netns pids pvdx-h1 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns pids pvdx-h2 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del pvdx-h1 2>/dev/null
  ip netns del pvdx-h2 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
command -v tcpdump >/dev/null || apt-get install -y tcpdump
mkdir -p "$W/h1" "$W/h2" "$W/bin"
chmod 700 "$W/h1" "$W/h2"
gcc -O2 -o "$W/bin/pvdping" "$SRC" -lpvm3

ip netns add pvdx-h1
ip netns add pvdx-h2
ip link add pvdx1 type veth peer name pvdx2
ip link set pvdx1 netns pvdx-h1
ip link set pvdx2 netns pvdx-h2
for k in 1 2; do
  ip -n pvdx-h$k link set pvdx$k name eth0
  ip -n pvdx-h$k addr add 10.234.0.$k/24 dev eth0
  ip -n pvdx-h$k link set eth0 mtu 1500 up
  ip -n pvdx-h$k link set lo up
done

# rsh replacement: pvmd runs `$PVM_RSH 10.234.0.2 [-l user] '<slave command>'`.
cat > "$W/rsh" <<RSH
#!/bin/bash
host=\$1; shift
while [ \$# -gt 1 ]; do case \$1 in -l) shift 2;; -n) shift;; *) break;; esac; done
k=\${host##*.}
exec ip netns exec pvdx-h\$k env PVM_TMP=$W/h\$k PVM_ALLOW_ROOT=1 /bin/sh -c "\$*"
RSH
chmod +x "$W/rsh"
printf 'h1 ip=10.234.0.1\nh2 ip=10.234.0.2\n' > "$W/hostfile"

ip netns exec pvdx-h1 tcpdump -i eth0 -s 0 -U -w "$OUT" >"$W/tcpdump.log" 2>&1 &
PIDS+=($!)
sleep 1
ip netns exec pvdx-h1 env PVM_TMP="$W/h1" PVM_ALLOW_ROOT=1 PVM_RSH="$W/rsh" \
  setsid pvmd -nh1 "$W/hostfile" </dev/null >"$W/pvmd.out" 2>&1 &
PIDS+=($!)
for i in $(seq 100); do [ -e "$W/h1/pvmd.0" ] && break; sleep 0.1; done
[ -e "$W/h1/pvmd.0" ] || { echo "master pvmd did not start"; cat "$W/pvmd.out"; exit 1; }
pvm_in() { ip netns exec pvdx-h1 env PVM_TMP="$W/h1" PVM_ALLOW_ROOT=1 "$@"; }
for i in $(seq 60); do
  n=$(echo conf | pvm_in pvm 2>/dev/null | grep -cE '^ +h[12] ' || true)
  [ "$n" -ge 2 ] && break; sleep 0.5
done
echo conf | pvm_in pvm 2>&1 | grep -v '^pvm>' || true
timeout 60 ip netns exec pvdx-h1 env PVM_TMP="$W/h1" PVM_ALLOW_ROOT=1 "$W/bin/pvdping"
sleep 0.5
# Copies, so that `ps -a` and the capture name them unmistakably.
cp /bin/echo "$W/bin/pvecho"; cp /bin/sleep "$W/bin/pvsleep"
printf 'conf\nps -a\nmstat h2\nspawn -h2 -> %s/bin/pvecho hello from h2\n' "$W" | pvm_in timeout 20 pvm 2>&1 | tail -20 || true
sleep 1
printf 'spawn -h2 %s/bin/pvsleep 30\n' "$W" | pvm_in timeout 20 pvm 2>&1 | tail -5 || true
sleep 0.5
T=$(echo 'ps -a' | pvm_in timeout 10 pvm 2>/dev/null | awk '/pvsleep/ {print $2}' | head -1)
echo "sleep task $T"
printf 'ps -a\npstat %s\nsig 15 %s\n' "$T" "$T" | pvm_in timeout 20 pvm 2>&1 | tail -10 || true; sleep 1
printf 'spawn -h2 %s/bin/pvsleep 30\n' "$W" | pvm_in timeout 20 pvm 2>&1 | tail -5 || true
T=$(echo 'ps -a' | pvm_in timeout 10 pvm 2>/dev/null | awk '/pvsleep/ {print $2}' | head -1)
printf 'kill %s\ndelete h2\nconf\nadd h2\nconf\nps -a\n' "$T" | pvm_in timeout 30 pvm 2>&1 | tail -20 || true
sleep 2
echo halt | pvm_in timeout 10 pvm >/dev/null 2>&1 || true
sleep 1.5
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
cat "$W/tcpdump.log"
ls -l "$OUT"
