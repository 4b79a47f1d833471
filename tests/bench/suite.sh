#!/usr/bin/env bash
# The benchmark suite against one running cluster: one JSON line per case
# on stdout, labelled LABEL/CASE; the same suite runs against etcd and
# triad in one run (report.sh), and their lines compare case by case.
#
# usage: tests/bench/suite.sh ENDPOINTS LEADER LABEL [SERVER_PIDS]
#   SERVER_PIDS: the servers' processes, comma separated; each case then
#   also reports their CPU time, bytes written and resident memory.
# env:   BENCH (triad-bench binary, target/release/triad-bench), DUR
#        (seconds per case, 10), CASES (a subset, space separated)
set -uo pipefail
EP=${1:?endpoints}; LEADER=${2:?leader}; LABEL=${3:?label}; PIDS=${4:-}
B=${BENCH:-target/release/triad-bench}
DUR=${DUR:-10}
SIZES="256 1k 4k 16k 64k 256k 1m"
CASES=${CASES:-"put-1 put-64-leader put-64-all range-l-64 range-s-64 mixed-64 txn-put-64 lease-ka-64 watch-16 watch-256 $(for s in $SIZES; do printf 'put-v%s ' "$s"; done)txn64-16 put-paced range-paced idle"}
# Leader first: the single writer of the watch cases writes to the leader.
LF=$LEADER
for e in ${EP//,/ }; do [ "$e" = "$LEADER" ] || LF+=",$e"; done

run() { # case triad-bench-args...
  local name=$1; shift
  case " $CASES " in *" $name "*) ;; *) return 0 ;; esac
  echo "# $LABEL/$name: triad-bench $*" >&2
  "$B" "$@" --duration "$DUR" --label "$LABEL/$name" ${PIDS:+--server-pids "$PIDS"}
}
# Old revisions compacted away and the space given back, so that the
# large-value cases neither fill the backend quota nor measure the last
# case's garbage.
compact() {
  local rev
  rev=$(etcdctl --endpoints "$LEADER" get compact-probe -w json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])') || return 0
  etcdctl --endpoints "$LEADER" compact "$rev" --physical >/dev/null 2>&1
  etcdctl --endpoints "$EP" defrag >/dev/null 2>&1
}
bytes() { # 256, 4k, 1m → bytes
  case $1 in *k) echo $((${1%k} * 1024)) ;; *m) echo $((${1%m} * 1048576)) ;; *) echo "$1" ;; esac
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
# Each case from here on starts from a settled store: the last case's old
# revisions compacted and defragmented, so neither system measures the
# background work of the case before it (the value sweep leaves GiBs).
settled() { case " $CASES " in *" $1 "*) compact ;; esac; }
# Value sizes from small to Kubernetes-object sized and beyond: 64 clients
# on the leader, 16-byte keys over 2,000 keys.
for s in $SIZES; do
  settled "put-v$s"
  run "put-v$s" put --endpoints "$LEADER" --conns 8 --clients 64 --key-size 16 --val-size "$(bytes "$s")" --key-space 2000
done
settled txn64-16
run txn64-16 txn-put --endpoints "$LEADER" --conns 4 --clients 16 --key-size 16 --val-size 256 --key-space 100000 --txn-ops 64
# CPU per request at a fixed rate both systems sustain, and when idle.
settled put-paced
run put-paced put --endpoints "$LEADER" --conns 4 --clients 16 $W --key-space 100000 --rate 1000
run range-paced range --endpoints "$EP" --conns 4 --clients 16 $W --key-space 10000 --no-prefill --rate 1000
run idle idle --endpoints "$EP"
exit 0
