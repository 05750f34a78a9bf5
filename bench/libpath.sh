#!/usr/bin/env bash
# bench/libpath.sh: same-run comparison of two builds of our library (e.g. before and after a
# change) against the legacy library and a raw unix socketpair, on the message path only
# (bpp ping-pong, direct and daemon route, Raw/Default/InPlace, 8 B, 1 MB, 16 MB). Not a test.
#   bench/libpath.sh OLD_LIB_DIR NEW_LIB_DIR [ROUNDS] [ITERS] > results.txt
# Each *_LIB_DIR holds a libpvm3.so.3 (e.g. a copy of target/release/libpvm3.so). Output: one
# line per round, configuration, route, encoding and size: "ROUND CONFIG ROUTE ENC SIZE MED_US".
# Configurations: LL (legacy lib), LRold/LRnew (on the legacy pvmd), RRold/RRnew (on pvmd-rs,
# target/release/pvmd), raw (unix socketpair). Used for docs/benchmarks.md ("Buffer pool ...").
# OLD_ENV="VAR=value ..." is added to the old library's environment (and exported to the tasks it
# spawns), e.g. OLD_ENV=PVM_NO_BIG_FRAGS=1 with the same library twice; ONLY=daemon skips the
# direct-route runs; DAEMON_ENCS="raw def" sets the encodings of the daemon-route runs.
set -u
cd "$(dirname "$0")/.."
root=$PWD
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
libold=$(realpath "$1") libnew=$(realpath "$2")
rounds=${3:-5} iters=${4:-60}
work=$(mktemp -d /tmp/libpath.XXXXXX)
bin=$work/home/pvm3/bin/LINUX64
mkdir -p "$bin"
for p in bpp rawpp; do gcc -O2 -Wall -o "$bin/$p" "bench/suite/$p.c" -lpvm3; done
export PVM_ALLOW_ROOT=1 PVM_ROOT=/usr/lib/pvm3 PVM_ARCH=LINUX64 HOME=$work/home
unset PVMSOCK PVMEPID PVMDDEBUG PVMHOSTFILE PVM_EXPORT PVM_DPATH LD_LIBRARY_PATH
dpid=
start() { export PVM_TMP=$work/tmp-$1; rm -rf "$PVM_TMP"; mkdir -p "$PVM_TMP"
  env -u LD_LIBRARY_PATH "$2" >"$PVM_TMP/stdout" 2>"$PVM_TMP/stderr" </dev/null & dpid=$!
  for _ in $(seq 250); do [ -s "$PVM_TMP/stdout" ] && { sleep 0.2; break; }; sleep 0.02; done
  kill -0 $dpid 2>/dev/null || for p in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(cat /proc/$p/comm 2>/dev/null)" = pvmd ] || continue
    tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx "PVM_TMP=$PVM_TMP" && { dpid=$p; break; }; done; }
stop() { kill $dpid 2>/dev/null; for _ in $(seq 50); do kill -0 $dpid 2>/dev/null || break; sleep 0.05; done
  kill -9 $dpid 2>/dev/null; wait $dpid 2>/dev/null; }
trap 'stop; rm -rf "$work"' EXIT
pp() { # CONFIG ROUTE ENC "SIZES" ENV...
  local c=$1 r=$2 e=$3 sz=$4; shift 4
  local d=; [ "$r" = direct ] && d=-d
  # shellcheck disable=SC2086
  (cd "$work" && env "$@" timeout 120 "$bin/bpp" $d -e "$e" -n "$iters" $sz) 2>>"$work/err" |
    awk -v R="$round" -v c="$c" -v r="$r" -v e="$e" '$1=="pp"{print R, c, r, e, $2, $6}'
}
S="8 1048576 16777216"
oldenv=${OLD_ENV:-}
oldexp=$(for kv in $oldenv; do printf ':%s' "${kv%%=*}"; done)
old="LD_LIBRARY_PATH=$libold PVM_EXPORT=LD_LIBRARY_PATH$oldexp $oldenv"
new="LD_LIBRARY_PATH=$libnew PVM_EXPORT=LD_LIBRARY_PATH"
for round in $(seq "$rounds"); do
  start L /usr/bin/pvmd
  for e in raw def; do
    [ "${ONLY:-}" = daemon ] && break
    pp LL direct $e "$S" PVM_EXPORT=
    pp LRold direct $e "$S" $old
    pp LRnew direct $e "$S" $new
  done
  if [ "${ONLY:-}" != daemon ]; then
    pp LL direct inplace "1048576 16777216" PVM_EXPORT=
    pp LRold direct inplace "1048576 16777216" $old
    pp LRnew direct inplace "1048576 16777216" $new
  fi
  for e in ${DAEMON_ENCS:-raw}; do
    pp LL daemon $e "$S" PVM_EXPORT=
    pp LRold daemon $e "$S" $old
    pp LRnew daemon $e "$S" $new
  done
  stop
  start R "$root/target/release/pvmd"
  for e in ${DAEMON_ENCS:-raw}; do
    pp RRold daemon $e "$S" $old
    pp RRnew daemon $e "$S" $new
  done
  stop
  # shellcheck disable=SC2086
  (cd "$work" && timeout 60 "$bin/rawpp" unix -n "$iters" $S) | awk -v R="$round" '{print R, "raw", "unix", "-", $2, $6}'
done
