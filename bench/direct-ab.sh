#!/usr/bin/env bash
# bench/direct-ab.sh: paired same-run comparison on the direct route (PvmRouteDirect) between
# two tasks on one host, for two builds of our library, the legacy library and a raw unix
# socketpair. Not a test. Each round runs the four kinds back to back in an order that rotates
# by round, each with several bpp/rawpp invocations per size (1 MB x3, 16 MB x5: bpp caps a
# size at 64 MB each way, so one 16 MB invocation is only 4 round trips), so that every ratio
# can be taken within a round (the kinds of one round run seconds apart, under the same load).
#   bench/direct-ab.sh OLD_LIB_DIR NEW_LIB_DIR [ROUNDS] [ENC] > results.txt
# ENC: raw (PvmDataRaw, default) or def (PvmDataDefault). Output: "ROUND KIND SIZE MED_US" per
# invocation, KIND one of raw (unix socketpair), LL (legacy lib), old, new. The direct route
# does not involve the daemon: the legacy pvmd is used. Used for docs/benchmarks.md
# ("Direct routes between pvm-rs tasks").
set -u
cd "$(dirname "$0")/.."
root=$PWD
[ $# -ge 2 ] || { sed -n '2,13p' "$0"; exit 2; }
libold=$(realpath "$1") libnew=$(realpath "$2")
rounds=${3:-7} enc=${4:-raw}
work=$(mktemp -d /tmp/direct-ab.XXXXXX)
bin=$work/home/pvm3/bin/LINUX64
mkdir -p "$bin"
for p in bpp rawpp; do gcc -O2 -Wall -o "$bin/$p" "bench/suite/$p.c" -lpvm3; done
export PVM_ALLOW_ROOT=1 PVM_ROOT=/usr/lib/pvm3 PVM_ARCH=LINUX64 HOME=$work/home
unset PVMSOCK PVMEPID PVMDDEBUG PVMHOSTFILE PVM_EXPORT PVM_DPATH LD_LIBRARY_PATH
export PVM_TMP=$work/tmp
mkdir -p "$PVM_TMP"
env -u LD_LIBRARY_PATH /usr/bin/pvmd >"$PVM_TMP/stdout" 2>"$PVM_TMP/stderr" </dev/null & dpid=$!
for _ in $(seq 250); do [ -s "$PVM_TMP/stdout" ] && { sleep 0.2; break; }; sleep 0.02; done
# The legacy pvmd forks into the background: find it by its PVM_TMP.
kill -0 $dpid 2>/dev/null || for p in $(ls /proc | grep -E '^[0-9]+$'); do
  [ "$(cat /proc/$p/comm 2>/dev/null)" = pvmd ] || continue
  tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx "PVM_TMP=$PVM_TMP" && { dpid=$p; break; }; done
stop() { kill $dpid 2>/dev/null; for _ in $(seq 50); do kill -0 $dpid 2>/dev/null || break; sleep 0.05; done
  kill -9 $dpid 2>/dev/null; wait $dpid 2>/dev/null; }
trap 'stop; rm -rf "$work"' EXIT
S="1048576 1048576 1048576 16777216 16777216 16777216 16777216 16777216"
cd "$work"
one() { # KIND
  case $1 in
  raw) timeout 120 "$bin/rawpp" unix -n 60 $S ;;
  LL) env PVM_EXPORT= timeout 120 "$bin/bpp" -d -e "$enc" -n 60 $S ;;
  old) env LD_LIBRARY_PATH="$libold" PVM_EXPORT=LD_LIBRARY_PATH timeout 120 "$bin/bpp" -d -e "$enc" -n 60 $S ;;
  new) env LD_LIBRARY_PATH="$libnew" PVM_EXPORT=LD_LIBRARY_PATH timeout 120 "$bin/bpp" -d -e "$enc" -n 60 $S ;;
  esac 2>>"$work/err" | awk -v R="$round" -v k="$1" '{print R, k, $2, $6}'
}
kinds=(raw LL old new)
for round in $(seq "$rounds"); do
  for k in 0 1 2 3; do one "${kinds[$(((k + round) % 4))]}"; done
done
