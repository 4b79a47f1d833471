#!/usr/bin/env bash
# Interleaved rounds of one kvbench case against real etcd and one or more
# triad builds: each round starts every system fresh (new data directory),
# runs the case alone on the machine, stops it, and prints one line per
# system. Interleaving spreads the host's noisy spells over all systems;
# compare rounds side by side and over medians, not single runs.
#
# usage: tests/bench/ab.sh ROUNDS MEMBERS CASE SYSTEM...
#   CASE:   w16 (watch-latency, 16 watchers, writer and watchers on the
#           leader), w16all (the suite's watch-16: leader first, watchers
#           spread over all members), fan (1,000 watchers on one key,
#           100 puts/s), put1, put64, range
#   SYSTEM: etcd, or a directory holding triad binaries (target/release),
#           optionally with settings for the daemons: DIR@VAR=V,VAR2=V2
#           (e.g. target/release@TRIAD_SPIN_BEFORE_SLEEP=0)
# env:    KVBENCH (binary; default /tmp/kvbench-target/release/kvbench),
#         DUR (seconds per run, 10)
# prints: round system ops/s p50 p90 p99 p99.9 max errors (latencies µs)
set -u
ROUNDS=$1; M=$2; CASE=$3; shift 3
K=${KVBENCH:-/tmp/kvbench-target/release/kvbench}
DUR=${DUR:-10}
# shellcheck source=tests/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_kvbench "$K"

wait_up() {
  local t=0
  for e in ${1//,/ }; do
    until etcdctl --endpoints="$e" --command-timeout=2s put ab-probe x >/dev/null 2>&1; do
      sleep 0.1; t=$((t + 1)); [ $t -gt 600 ] && return 1
    done
  done
}
runcase() { # endpoints leader label
  local ep=$1 l=$2 lf=$2
  for e in ${ep//,/ }; do [ "$e" = "$l" ] || lf+=",$e"; done
  case $CASE in
    w16) $K watch-latency --endpoints "$l" --conns 4 --watchers 16 --put-rate 100 --duration "$DUR" --val-size 32 --label "$3" --json-only ;;
    w16all) $K watch-latency --endpoints "$lf" --conns 4 --watchers 16 --put-rate 100 --duration "$DUR" --val-size 32 --label "$3" --json-only ;;
    fan) $K watch-latency --endpoints "$l" --watchers 1000 --conns 8 --put-rate 100 --duration "$DUR" --label "$3" --json-only ;;
    put1) $K put --endpoints "$l" --conns 1 --clients 1 --duration "$DUR" --label "$3" --json-only ;;
    put64) $K put --endpoints "$l" --conns 8 --clients 64 --duration "$DUR" --label "$3" --json-only ;;
    range) $K range --endpoints "$ep" --conns 8 --clients 64 --duration "$DUR" --label "$3" --json-only ;;
    *) echo "unknown case $CASE" >&2; return 1 ;;
  esac
}
summary() { # round < kvbench output
  python3 -c "
import json, sys
for line in sys.stdin:
    if not line.startswith('{'): continue
    d = json.loads(line); l = d['lat_us']
    print(sys.argv[1], d['label'], '%.0f' % d['ops_per_s'], l['p50'], l['p90'], l['p99'], l['p999'], l['max'], d.get('errors'))
" "$1"
}

for ((r = 1; r <= ROUNDS; r++)); do
  for spec in "$@"; do
    dir=${spec%%@*}; envs=""; [ "$spec" != "$dir" ] && envs=${spec#*@}
    D=$(mktemp -d /tmp/triad-ab.XXXXXX)
    PIDS=()
    if [ "$dir" = etcd ]; then
      CL=""
      for ((i = 0; i < M; i++)); do CL+="${CL:+,}m$i=http://127.0.0.1:$((24791 + 10 * i))"; done
      for ((i = 0; i < M; i++)); do
        cp=$((24790 + 10 * i))
        etcd --name m$i --data-dir "$D/m$i" --listen-client-urls http://127.0.0.1:$cp \
          --advertise-client-urls http://127.0.0.1:$cp --listen-peer-urls http://127.0.0.1:$((cp + 1)) \
          --initial-advertise-peer-urls http://127.0.0.1:$((cp + 1)) --initial-cluster "$CL" \
          --initial-cluster-token "ab$$" --initial-cluster-state new >"$D/m$i.log" 2>&1 &
        PIDS+=($!)
      done
      EP=$(eps 24790 10 "$M")
    else
      (IFS=,; for kv in $envs; do export "$kv"; done
        exec "$dir/triad" up --members "$M" --data-dir "$D/t" --client-port 42379 >"$D/up.out" 2>"$D/up.err") &
      PIDS=($!)
      EP=$(eps 42379 10000 "$M")
    fi
    wait_up "$EP" || echo "round $r: $spec did not start" >&2
    sleep 1
    L=$(leader_of "$EP")
    # kvbench alone on the CPUs: a summarizer started beside it in a pipe
    # took the first ~100 ms from it, which showed up as a p99 burst.
    runcase "$EP" "$L" "$spec" >"$D/kvbench.out" 2>/dev/null
    summary "$r" <"$D/kvbench.out"
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$D"; sync; sleep 2
  done
done
