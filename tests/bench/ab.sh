#!/usr/bin/env bash
# Interleaved rounds of one benchmark case against real etcd and one or more
# triad builds: each round starts every system fresh (new data directory),
# runs the case alone on the machine, stops it, and prints one line per
# system. Interleaving spreads the host's noisy spells over all systems;
# compare rounds side by side and over medians, not single runs.
#
# usage: tests/bench/ab.sh ROUNDS MEMBERS CASE SYSTEM...
#   CASE:   w16 (watch-latency, 16 watchers, writer and watchers on the
#           leader), w16all (the suite's watch-16: leader first, watchers
#           spread over all members), fan (1,000 watchers on one key,
#           100 puts/s), put1, put64 (to the leader), put64all (spread
#           over the members: followers forward), range
#   SYSTEM: etcd (started by tests/bench/etcd.sh: 1 or 3 members),
#           or a directory holding triad binaries (target/release),
#           optionally with settings for the daemons: DIR@VAR=V,VAR2=V2
#           (e.g. target/release@TRIAD_SPIN_BEFORE_SLEEP=0)
# env:    BENCH (client; default target/release/triad-bench), DUR
#         (seconds per run, 10)
# prints: round system ops/s p50 p90 p99 p99.9 max errors (latencies µs)
set -u
K=${BENCH:-target/release/triad-bench}
export DUR=${DUR:-10}
# shellcheck source=tests/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runcase() { # case endpoints leader label
  local ep=$2 l=$3 lf=$3
  for e in ${ep//,/ }; do [ "$e" = "$l" ] || lf+=",$e"; done
  case $1 in
    w16) $K watch-latency --endpoints "$l" --conns 4 --watchers 16 --put-rate 100 --duration "$DUR" --val-size 32 --label "$4" --json-only ;;
    w16all) $K watch-latency --endpoints "$lf" --conns 4 --watchers 16 --put-rate 100 --duration "$DUR" --val-size 32 --label "$4" --json-only ;;
    fan) $K watch-latency --endpoints "$l" --watchers 1000 --conns 8 --put-rate 100 --duration "$DUR" --label "$4" --json-only ;;
    put1) $K put --endpoints "$l" --conns 1 --clients 1 --duration "$DUR" --label "$4" --json-only ;;
    put64) $K put --endpoints "$l" --conns 8 --clients 64 --duration "$DUR" --label "$4" --json-only ;;
    put64all) $K put --endpoints "$ep" --conns 8 --clients 64 --duration "$DUR" --label "$4" --json-only ;;
    range) $K range --endpoints "$ep" --conns 8 --clients 64 --duration "$DUR" --label "$4" --json-only ;;
    *) echo "unknown case $1" >&2; return 1 ;;
  esac
}
# One run against a system already serving (how etcd-baseline.sh calls
# back): a second's settling, then the client.
if [ "${1:-}" = --run ]; then
  shift
  sleep 1
  runcase "$@"
  exit
fi

ROUNDS=$1; M=$2; CASE=$3; shift 3
ensure_bench "$K"
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
    # The client alone on the CPUs, summarized afterwards: a summarizer
    # started beside it in a pipe took its first ~100 ms, which showed as a
    # p99 burst.
    if [ "$dir" = etcd ]; then
      tests/bench/etcd.sh -n "$M" -d "$D" -- "$0" --run "$CASE" {EP} {LEADER} "$spec" \
        >"$D/bench.out" 2>"$D/run.err" || { echo "round $r: $spec failed" >&2; cat "$D/run.err" >&2; }
    else
      (IFS=,; for kv in $envs; do export "$kv"; done
        exec "$dir/triad" up --members "$M" --data-dir "$D/t" --client-port 42379 >"$D/up.out" 2>"$D/up.err") &
      P=$!
      EP=$(eps 42379 10000 "$M")
      if wait_serving "$EP" >/dev/null; then
        "$0" --run "$CASE" "$EP" "$(leader_of "$EP")" "$spec" >"$D/bench.out" 2>/dev/null
      else
        echo "round $r: $spec did not start" >&2
      fi
      kill -TERM "$P" 2>/dev/null
      wait "$P" 2>/dev/null
    fi
    [ -s "$D/bench.out" ] && summary "$r" <"$D/bench.out"
    rm -rf "$D"; sync; sleep 2
  done
done
