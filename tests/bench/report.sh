#!/usr/bin/env bash
# The three-member benchmark report: the benchmark suite (suite.sh, run by
# triad's own client, tests/bench/client) against a 3-member etcd and a
# 3-member triad started here, one after the other in this run, then the
# failover cases (a fresh cluster each, its leader killed or frozen under one
# writer on the other two members), then N keys (256-byte values) loaded into
# each for restart-to-serving time,
# the resident memory of every daemon and the size on disk, and the disk's
# raw fsync floor measured on the same filesystem. The result replaces the
# section between the report markers in BENCHMARKS.md (or $OUT).
#
# usage: tests/bench/report.sh
# env:   DUR (seconds per case, 10; the failover cases run at least 15),
#        N (keys for the load phase, 1000000), CASES (a subset of the
#        suite's cases and failover-kill, failover-freeze; all when unset),
#        BENCH (client binary), PARENT (where the data dirs go, /tmp), OUT
#        (file to write, BENCHMARKS.md), KEEP=1 (keep the raw JSON lines
#        and logs)
# needs: Debian's etcd-server and etcd-client (etcd and etcdctl), python3
set -euo pipefail
shopt -s inherit_errexit # a failure inside a command substitution stops the report too
cd "$(dirname "$0")/../.."
DUR=${DUR:-10}
N=${N:-1000000}
PARENT=${PARENT:-/tmp}
OUT=${OUT:-BENCHMARKS.md}
B=${BENCH:-target/release/triad-bench}
export BENCH=$B DUR ETCDCTL_API=3
SUITE=tests/bench/suite.sh
# shellcheck source=tests/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TRIAD_PORT=42379 # members on 42379, 52379, 62379
ETCD_PORT=24790  # etcd.sh's layout: members on 24790, 24800, 24810

D=$(mktemp -d "$PARENT/triad-report.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "report: kept $D" >&2; else rm -rf "$D"; fi
}
trap cleanup EXIT INT TERM

cargo build --release --locked # the binaries measured are the tree described
ensure_bench "$B"
log() { echo "report: $*" >&2; }
# Before each measured phase: the previous phase's dirty pages written back,
# so neither system pays for the other's writes.
settle() { sync; sleep 5; }
rss_mb() { ps -o rss= -p "$1" | awk '{printf "%.0f", $1/1024}'; }

# --- the disk's fsync floor, on the filesystem the data dirs live on ---
fsync_floor() {
  python3 - "$D/fsync-probe" <<'EOF'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
lat, end = [], time.monotonic() + 3
while time.monotonic() < end:
    os.write(fd, b"x" * 4096)
    t = time.monotonic(); os.fdatasync(fd); lat.append(time.monotonic() - t)
os.close(fd); os.unlink(sys.argv[1])
lat.sort()
us = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6
print("| %d | %.0f | %.0f | %.0f | %.0f |" % (len(lat) / 3, us(0.5), us(0.9), us(0.99), sum(lat) / len(lat) * 1e6))
EOF
}

# --- triad: a 3-member cluster under `triad up --members 3` ---
start_triad() {
  target/release/triad up --members 3 --data-dir "$D/triad" --client-port $TRIAD_PORT \
    >>"$D/triad-up.out" 2>>"$D/triad-up.err" &
  TRIAD=$!
  PIDS+=("$TRIAD")
}
stop_triad() { # TERM or KILL
  kill "-$1" "$TRIAD"
  wait "$TRIAD" 2>/dev/null || true
  if [ "$1" = KILL ]; then # the supervisor died first: its daemons too
    for f in "$D"/triad/m*/pids/*.pid; do kill -KILL "$(cat "$f")" 2>/dev/null || true; done
    sleep 0.5
  fi
}
triad_pids() { # every daemon of every member, comma separated
  cat "$D"/triad/m*/pids/{storaged,raftd,gatewayd}.pid | paste -sd, -
}
triad_rss() {
  local i d
  for i in 0 1 2; do
    for d in storaged raftd gatewayd; do
      echo "| triad m$i $d | $(rss_mb "$(cat "$D/triad/m$i/pids/$d.pid")") |"
    done
  done
}

# --- etcd: the same layout as etcd.sh, but kept across restarts ---
ETCD_CLUSTER="m0=http://127.0.0.1:$((ETCD_PORT + 1)),m1=http://127.0.0.1:$((ETCD_PORT + 11)),m2=http://127.0.0.1:$((ETCD_PORT + 21))"
start_etcd() {
  ETCDS=()
  local i cp
  for i in 0 1 2; do
    cp=$((ETCD_PORT + 10 * i))
    etcd --name "m$i" --data-dir "$D/etcd/m$i" \
      --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$((cp + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((cp + 1))" \
      --initial-cluster "$ETCD_CLUSTER" --initial-cluster-token report --initial-cluster-state new \
      >>"$D/etcd-m$i.log" 2>&1 &
    ETCDS+=($!)
    PIDS+=($!)
  done
}
stop_etcd() {
  local p
  for p in "${ETCDS[@]}"; do kill "-$1" "$p" 2>/dev/null || true; done
  for p in "${ETCDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
etcd_rss() {
  local i
  for i in 0 1 2; do echo "| etcd m$i | $(rss_mb "${ETCDS[$i]}") |"; done
}

# --- failover: how long writes stop when the leader fails ---
# Each case on a fresh cluster: one writer on the two other members, and 3 s
# in, the leader's process (etcd, or the leader member's raftd) killed
# (SIGKILL) or frozen (SIGSTOP, continued after the run). triad's supervisor
# restarts a killed raftd; the outage is until writes go on either way.
FAILOVER_CASES="failover-kill failover-freeze"
FAILOVER_DUR=$((DUR > 15 ? DUR : 15)) # 12 s of writing after the fault, or more
wanted() { # case → whether this run includes it (every case when CASES is unset)
  [ -z "${CASES:-}" ] || case " $CASES " in *" $1 "*) ;; *) return 1 ;; esac
}
etcd_pid() { echo "${ETCDS[$1]}"; }                      # member index → its etcd
triad_raftd_pid() { cat "$D/triad/m$1/pids/raftd.pid"; } # member index → its raftd
failover_phase() { # label start stop endpoints base-port port-step pid-of datadir
  local label=$1 start=$2 stop=$3 ep=$4 base=$5 step=$6 pid_of=$7 dir=$8
  local c leader pid others fault
  for c in $FAILOVER_CASES; do
    wanted "$c" || continue
    log "$label/$c"
    settle
    rm -rf "$dir"
    $start
    wait_serving "$ep" >/dev/null
    leader=$(leader_of "$ep")
    pid=$($pid_of $(((${leader##*:} - base) / step)))
    others=$(tr , '\n' <<<"$ep" | grep -vx "$leader" | paste -sd, -)
    case $c in
      failover-kill) fault="kill -KILL $pid" ;;
      failover-freeze) fault="kill -STOP $pid" ;;
    esac
    "$B" failover --endpoints "$others" --duration "$FAILOVER_DUR" --fault-after 3 \
      --fault "$fault" --key-size 8 --val-size 256 --label "$label/$c" >>"$D/suite.jsonl" ||
      log "$label/$c failed"
    kill -CONT "$pid" 2>/dev/null || true
    $stop TERM
    rm -rf "$dir"
  done
}

load() { # leader endpoint → puts/s
  "$B" put --endpoints "$1" --conns 8 --clients 64 --total "$N" --key-space "$N" \
    --sequential-keys --key-size 16 --val-size 256 --json-only --label load | python3 -c "
import json, sys
d = json.loads(sys.stdin.read().splitlines()[-1])
assert d['errors'] == 0, d
print('%.0f' % d['ops_per_s'])"
}
count() { etcdctl --endpoints="$1" get --prefix b/ --keys-only --limit=1 -w json | python3 -c "import json,sys; print(json.load(sys.stdin)['count'])"; }

# The load phase for one system: prints one markdown table row and the RSS rows.
load_phase() { # name start stop rss endpoints datadir
  local name=$1 start=$2 stop=$3 rss=$4 ep=$5 dir=$6 rate keys disk graceful killed
  settle
  $start
  wait_serving "$ep" >/dev/null
  rate=$(load "$(leader_of "$ep")")
  keys=$(count "$ep")
  sleep 2
  $rss >"$D/$name-rss.md"
  disk=$(du -sm "$dir" | cut -f1)
  $stop TERM
  settle
  $start
  graceful=$(wait_serving "$ep")
  $rss >"$D/$name-rss-restarted.md"
  $stop KILL
  $start
  killed=$(wait_serving "$ep")
  $stop TERM
  echo "| $name | $keys | $rate | $disk | $graceful | $killed |"
}

log "fsync floor"
FSYNC=$(fsync_floor)

log "benchmark suite against etcd (3 members, ${DUR}s per case)"
settle
tests/bench/etcd.sh -n 3 -p $ETCD_PORT -d "$D" -- $SUITE {EP} {LEADER} etcd-3 {PIDS} >"$D/suite.jsonl"

log "benchmark suite against triad (3 members)"
settle
start_triad
TEP=$(eps $TRIAD_PORT 10000)
wait_serving "$TEP" >/dev/null
$SUITE "$TEP" "$(leader_of "$TEP")" triad-3 "$(triad_pids)" >>"$D/suite.jsonl"
stop_triad TERM
rm -rf "$D/triad"

EEP=$(eps $ETCD_PORT 10)
log "failover: the leader killed and frozen, etcd then triad"
failover_phase etcd-3 start_etcd stop_etcd "$EEP" $ETCD_PORT 10 etcd_pid "$D/etcd"
failover_phase triad-3 start_triad stop_triad "$TEP" $TRIAD_PORT 10000 triad_raftd_pid "$D/triad"

log "load $N keys into each, restart, measure"
LOAD_ETCD=$(load_phase etcd start_etcd stop_etcd etcd_rss "$EEP" "$D/etcd")
LOAD_TRIAD=$(load_phase triad start_triad stop_triad triad_rss "$TEP" "$D/triad")

BEGIN='<!-- report.sh: begin -->'
END='<!-- report.sh: end -->'
{
  echo "$BEGIN"
  echo "## Three members against etcd: \`tests/bench/report.sh\` ($(date -u +%F))"
  echo
  echo "Written by \`DUR=$DUR N=$N tests/bench/report.sh\` on $(nproc) cores, $(uname -r);"
  echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}') and triad $(git describe --always --dirty) in the same run,"
  echo "each as 3 members on loopback with data under $PARENT. Ratios are triad/etcd:"
  echo "ops/s above 1 and latency below 1 mean triad is better."
  echo
  echo "### Disk: raw fsync floor (4 KiB write + fdatasync, 3 s, same filesystem)"
  echo
  echo "| fsyncs/s | p50 µs | p90 µs | p99 µs | mean µs |"
  echo "|--:|--:|--:|--:|--:|"
  echo "$FSYNC"
  echo
  echo "### Benchmark suite (\`tests/bench/suite.sh\`, ${DUR} s per case)"
  echo
  "$B" table --ratio etcd-3 triad-3 "$D/suite.jsonl"
  echo
  echo "### $N keys (16-byte keys, 256-byte values, 64 clients on the leader)"
  echo
  echo "Restart = the whole cluster stopped (SIGTERM, or kill -9 of every process)"
  echo "and started again, until every member answers a linearizable get."
  echo
  echo "| system | keys | load puts/s | disk MiB (3 members) | restart after SIGTERM s | restart after kill -9 s |"
  echo "|---|--:|--:|--:|--:|--:|"
  echo "$LOAD_ETCD"
  echo "$LOAD_TRIAD"
  echo
  echo "Resident memory with $N keys loaded (MiB), then after the graceful restart:"
  echo
  echo "| process | RSS loaded | RSS restarted |"
  echo "|---|--:|--:|"
  paste -d'|' "$D/etcd-rss.md" <(cut -d'|' -f3- "$D/etcd-rss-restarted.md") | sed 's/||/|/'
  paste -d'|' "$D/triad-rss.md" <(cut -d'|' -f3- "$D/triad-rss-restarted.md") | sed 's/||/|/'
  echo "$END"
} >"$D/report.md"

# Replace the marked section, or put it right under the title the first time.
python3 - "$OUT" "$D/report.md" "$BEGIN" "$END" <<'EOF'
import sys
out, new, begin, end = sys.argv[1:]
text, section = open(out).read(), open(new).read().rstrip("\n")
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
else:
    title, _, body = text.partition("\n")
    text = title + "\n\n" + section + "\n" + body
open(out, "w").write(text)
EOF
cat "$D/report.md"
log "written to $OUT"
