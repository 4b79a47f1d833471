#!/usr/bin/env bash
# Load N keys (256-byte values) into a fresh single-member triad and a fresh
# single-member etcd, then report for each: on-disk size, resident memory,
# and restart-to-serving time after a graceful stop and after kill -9
# ("serving" = `etcdctl endpoint health` succeeds, polled every 20 ms).
# usage: tests/bench/load_restart.sh   (env: N, KVBENCH, PORT, DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
N=${N:-1000000}
K=${KVBENCH:-/tmp/kvbench-target/release/kvbench}
PORT=${PORT:-32379}
DIR=${DIR:-$(mktemp -d /tmp/load-restart.XXXXXX)}
[ -x target/release/triad ] || cargo build --release --locked
export ETCDCTL_API=3

now() { date +%s.%N; }
wait_serving() { # endpoint → seconds until healthy
  local t0; t0=$(now)
  until etcdctl --endpoints="$1" --command-timeout=2s endpoint health >/dev/null 2>&1; do sleep 0.02; done
  echo "$(now) - $t0" | bc
}
rss_mb() { ps -o rss= -p "$1" | awk '{printf "%.0f", $1/1024}'; }
load() {
  "$K" put --endpoints "$1" --conns 8 --clients 64 --total "$N" --key-space "$N" \
    --sequential-keys --key-size 16 --val-size 256 --json-only | python3 -c "
import json, sys
d = json.loads(sys.stdin.read())
print('loaded %d keys at %.0f puts/s, errors %d' % (d['ops'], d['ops_per_s'], d['errors']))"
}

echo "## triad ($N keys)"
T="$DIR/triad"
target/release/triad up --data-dir "$T" --client-port "$PORT" >"$DIR/triad-up.out" 2>&1 &
UP=$!
wait_serving "127.0.0.1:$PORT" >/dev/null
load "127.0.0.1:$PORT"
count() { etcdctl --endpoints="$1" get --prefix b/ --limit=1 -w json | python3 -c "import json,sys; print('keys:', json.load(sys.stdin)['count'])"; }
count "127.0.0.1:$PORT"
sleep 2
for d in storaged raftd gatewayd; do echo "rss $d: $(rss_mb "$(cat "$T/pids/$d.pid")") MiB"; done
echo "disk: $(du -sm "$T" | cut -f1) MiB (storaged $(du -sm "$T/storaged" | cut -f1), raftd $(du -sm "$T/raftd" | cut -f1))"
kill -TERM $UP; wait $UP || true
target/release/triad up --data-dir "$T" --client-port "$PORT" >>"$DIR/triad-up.out" 2>&1 &
UP=$!
echo "restart after graceful stop: $(wait_serving "127.0.0.1:$PORT") s"
for d in storaged raftd gatewayd; do echo "rss after restart $d: $(rss_mb "$(cat "$T/pids/$d.pid")") MiB"; done
kill -KILL $UP; wait $UP 2>/dev/null || true
sleep 0.5
target/release/triad up --data-dir "$T" --client-port "$PORT" >>"$DIR/triad-up.out" 2>&1 &
UP=$!
echo "restart after kill -9: $(wait_serving "127.0.0.1:$PORT") s"
kill -TERM $UP; wait $UP || true

echo "## etcd $(etcd --version | head -1 | awk '{print $3}') ($N keys)"
E="$DIR/etcd"
start_etcd() {
  etcd --name default --data-dir "$E" --listen-client-urls "http://127.0.0.1:$PORT" \
    --advertise-client-urls "http://127.0.0.1:$PORT" --listen-peer-urls "http://127.0.0.1:$((PORT+1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((PORT+1))" \
    --initial-cluster "default=http://127.0.0.1:$((PORT+1))" >>"$DIR/etcd.log" 2>&1 &
  ETCD=$!
}
start_etcd
wait_serving "127.0.0.1:$PORT" >/dev/null
load "127.0.0.1:$PORT"
count "127.0.0.1:$PORT"
sleep 2
echo "rss etcd: $(rss_mb $ETCD) MiB"
echo "disk: $(du -sm "$E" | cut -f1) MiB"
kill -TERM $ETCD; wait $ETCD || true
start_etcd
echo "restart after graceful stop: $(wait_serving "127.0.0.1:$PORT") s"
echo "rss after restart etcd: $(rss_mb $ETCD) MiB"
kill -KILL $ETCD; wait $ETCD 2>/dev/null || true
start_etcd
echo "restart after kill -9: $(wait_serving "127.0.0.1:$PORT") s"
kill -TERM $ETCD; wait $ETCD || true
rm -rf "$DIR"
