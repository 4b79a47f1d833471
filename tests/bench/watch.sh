#!/usr/bin/env bash
# Watch benchmarks for one endpoint: put-to-event latency with 16 watchers,
# and fan-out to 1,000 watchers on one key at 100 puts/s.
# usage: tests/bench/watch.sh ENDPOINT LABEL   (env KVBENCH)
K=${KVBENCH:-/tmp/kvbench-target/release/kvbench}
$K watch-latency --endpoints "$1" --watchers 16 --conns 4 --put-rate 100 --duration 10 --label "$2/watch-16" --json-only
$K watch-latency --endpoints "$1" --watchers 1000 --conns 8 --put-rate 100 --duration 10 --label "$2/watch-1000" --json-only
