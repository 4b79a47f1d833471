#!/usr/bin/env bash
# The reference etcd for the benchmarks: starts a fresh 1- or 3-member etcd
# (Debian's etcd-server) on 127.0.0.1 in a temporary directory, runs one
# command against it, stops the members and removes the directory.
#
# usage: tests/bench/etcd.sh [-n 1|3] [-p BASEPORT] [-d PARENT] -- CMD [ARGS...]
#   -n  members (default 1)
#   -p  base port (default 24790): member i serves clients on BASE+10*i and
#       peers on BASE+10*i+1
#   -d  where the temporary directory goes (default ${TMPDIR:-/tmp})
# The tokens {EP} (every client endpoint, comma separated), {LEADER} (the
# leader's) and {PIDS} (the members' processes) in CMD's arguments are
# replaced. Extra etcd flags may be
# given in $ETCD_FLAGS. The exit status is CMD's.
set -euo pipefail
N=1 BASE=24790 PARENT=${TMPDIR:-/tmp}
while getopts "n:p:d:" o; do
  case $o in
    n) N=$OPTARG ;;
    p) BASE=$OPTARG ;;
    d) PARENT=$OPTARG ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = -- ] && shift
[ $# -ge 1 ] || { echo "etcd.sh: no command" >&2; exit 2; }
command -v etcd >/dev/null || { echo "etcd.sh: etcd not installed (apt-get install etcd-server)" >&2; exit 2; }
# shellcheck source=tests/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D=$(mktemp -d "$PARENT/etcd-bench.XXXXXX")
PIDS=()
stop() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$D"
}
trap stop EXIT INT TERM

CLUSTER=""
for ((i = 0; i < N; i++)); do
  CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:$((BASE + 10 * i + 1))"
done
for ((i = 0; i < N; i++)); do
  c=$((BASE + 10 * i))
  # shellcheck disable=SC2086 # ETCD_FLAGS is a list of flags
  etcd --name "m$i" --data-dir "$D/m$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$((c + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((c + 1))" \
    --initial-cluster "$CLUSTER" --initial-cluster-token bench --initial-cluster-state new \
    ${ETCD_FLAGS:-} >"$D/m$i.log" 2>&1 &
  PIDS+=($!)
done
EP=$(eps "$BASE" 10 "$N")
wait_serving "$EP" >/dev/null
LEADER=$(leader_of "$EP")
args=()
for a in "$@"; do
  a=${a//\{EP\}/$EP}
  a=${a//\{PIDS\}/$(IFS=,; echo "${PIDS[*]}")}
  args+=("${a//\{LEADER\}/$LEADER}")
done
"${args[@]}"
