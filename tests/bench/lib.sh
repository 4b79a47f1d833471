# Helpers shared by the benchmark scripts in tests/bench (sourced, not run).
# Paths are relative to the project root, where the scripts are run from.

# Build triad's benchmark client (tests/bench/client) if it is missing.
ensure_bench() { # binary path
  [ -x "$1" ] || cargo build --release --locked -p triad-bench
}

eps() { # base port, step between members, members (3) → client endpoints
  local base=$1 step=$2 n=${3:-3} out="" i
  for ((i = 0; i < n; i++)); do out+="${out:+,}127.0.0.1:$((base + step * i))"; done
  echo "$out"
}

leader_of() { # endpoints → the leader's endpoint
  etcdctl --endpoints="$1" endpoint status -w json | python3 -c "
import json, sys
for s in json.load(sys.stdin):
    if s['Status']['leader'] == s['Status']['header']['member_id']:
        print(s['Endpoint'].replace('http://', '')); break"
}

now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }

# "Serving" = a linearizable read answered, which needs an elected leader
# and every member's state machine reachable through the one asked.
wait_serving() { # endpoints → seconds until every member answers (fails after 300 s)
  local t0 e; t0=$(now)
  for e in ${1//,/ }; do
    until etcdctl --endpoints="$e" --command-timeout=2s get bench-probe >/dev/null 2>&1; do
      if (($(date +%s) - ${t0%.*} > 300)); then
        echo "$e did not serve within 300 s" >&2
        return 1
      fi
      sleep 0.02
    done
  done
  since "$t0"
}
