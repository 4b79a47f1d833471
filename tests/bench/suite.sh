#!/usr/bin/env bash
# The benchmark suite against one running cluster: one JSON line per case
# on stdout, labelled LABEL/CASE; the same suite runs against etcd and
# triad in one run (report.sh), and their lines compare case by case.
#
# usage: tests/bench/suite.sh ENDPOINTS LEADER LABEL
# env:   BENCH (triad-bench binary, target/release/triad-bench), DUR
#        (seconds per case, 10), CASES (a subset, space separated)
set -uo pipefail
EP=${1:?endpoints}; LEADER=${2:?leader}; LABEL=${3:?label}
B=${BENCH:-target/release/triad-bench}
DUR=${DUR:-10}
CASES=${CASES:-"put-1 put-64-leader put-64-all range-l-64 range-s-64 mixed-64 txn-put-64 lease-ka-64 watch-16 watch-256"}
# Leader first: the single writer of the watch cases writes to the leader.
LF=$LEADER
for e in ${EP//,/ }; do [ "$e" = "$LEADER" ] || LF+=",$e"; done

run() { # case triad-bench-args...
  local name=$1; shift
  case " $CASES " in *" $name "*) ;; *) return 0 ;; esac
  echo "# $LABEL/$name: triad-bench $*" >&2
  "$B" "$@" --duration "$DUR" --label "$LABEL/$name"
}
W="--key-size 8 --val-size 256"
run put-1 put --endpoints "$LEADER" --conns 1 --clients 1 $W --key-space 100000 --sequential-keys
run put-64-leader put --endpoints "$LEADER" --conns 8 --clients 64 $W --key-space 100000 --sequential-keys
[ "$EP" != "$LEADER" ] &&
  run put-64-all put --endpoints "$EP" --conns 8 --clients 64 $W --key-space 100000 --sequential-keys
run range-l-64 range --endpoints "$EP" --conns 8 --clients 64 $W --key-space 10000
run range-s-64 range --endpoints "$EP" --conns 8 --clients 64 $W --key-space 10000 --serializable --no-prefill
run mixed-64 mixed --endpoints "$EP" --conns 8 --clients 64 $W --key-space 10000 --read-ratio 0.9 --no-prefill
run txn-put-64 txn-put --endpoints "$LEADER" --conns 8 --clients 64 $W --key-space 100000 --txn-ops 1
run lease-ka-64 lease-keepalive --endpoints "$EP" --conns 8 --clients 64
run watch-16 watch-latency --endpoints "$LF" --conns 4 --watchers 16 --put-rate 100 --val-size 32
run watch-256 watch-latency --endpoints "$LF" --conns 8 --watchers 256 --put-rate 500 --val-size 32
exit 0
