#!/usr/bin/env bash
# Proxy benchmark: wrk through Teal's load balancer, through HAProxy configured the same way, and
# directly to one target, in the same run, against the same teal-demo targets.
#
# Needs: wrk and haproxy (Debian: apt-get install -y wrk haproxy), and release builds of the
# `ProxyBenchmark` and `teal-demo` products of PACKAGE_DIR (default: the repository root).
#
# Environment knobs: PACKAGE_DIR, DURATION (s per measurement, default 10), CONNECTIONS (default 32),
# THREADS (wrk threads, default 2), ROUNDS (default 2), BASE_PORT (default 18080), SKIP_BUILD=1.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
PACKAGE_DIR="${PACKAGE_DIR:-$(cd "$here/../.." && pwd)}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-2}"
BASE_PORT="${BASE_PORT:-18080}"
TEAL_PORT=$BASE_PORT
HAPROXY_PORT=$((BASE_PORT + 1))
TARGET1=$((BASE_PORT + 2))
TARGET2=$((BASE_PORT + 3))

for tool in wrk haproxy; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (apt-get install -y wrk haproxy)" >&2; exit 1; }
done

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$PACKAGE_DIR" && swift build -c release --product ProxyBenchmark && swift build -c release --product teal-demo)
fi
bin="$(cd "$PACKAGE_DIR" && swift build -c release --show-bin-path)"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

wait_for_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: nothing listens on port $1" >&2
  exit 1
}

# Two targets, one event loop thread each.
for port in $TARGET1 $TARGET2; do
  "$bin/teal-demo" --port "$port" --threads 1 >"$work/demo-$port.log" 2>&1 &
  pids+=($!)
  wait_for_port "$port"
done

# Teal: one service, one target group of both targets (round-robin, pooled keep-alive).
total=$(( (DURATION + 2) * 3 * ROUNDS + 30 ))
"$bin/ProxyBenchmark" "$TEAL_PORT" "$total" "127.0.0.1:$TARGET1" "127.0.0.1:$TARGET2" >"$work/teal.log" 2>&1 &
pids+=($!)
wait_for_port "$TEAL_PORT"

# HAProxy: same targets, round-robin, keep-alive on both sides, connection reuse, 2 threads.
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend targets
backend targets
  balance roundrobin
  server t1 127.0.0.1:$TARGET1
  server t2 127.0.0.1:$TARGET2
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
wait_for_port "$HAPROXY_PORT"

# wrk prints "Requests/sec: N" and, with --latency, "50% 1.23ms" / "99% 4.56ms".
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else { printf "%s", v } }'
}
measure() { # name port
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$2/" >/dev/null 2>&1 || true # warm-up
  local out
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/")"
  local rps p50 p99 errors
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
  errors="$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')"
  printf "%-8s round %d  req/s %10s  p50 %8s ms  p99 %8s ms  %s\n" "$1" "$round" "$rps" "$p50" "$p99" "$errors"
  echo "$1 $rps $p50 $p99" >>"$work/results"
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
  measure direct "$TARGET1"
  measure teal "$TEAL_PORT"
  measure haproxy "$HAPROXY_PORT"
done

echo
awk '
  { n[$1]++; rps[$1] += $2; p50[$1] += $3; p99[$1] += $4 }
  END {
    for (k in n) { rps[k] /= n[k]; p50[k] /= n[k]; p99[k] /= n[k] }
    printf "mean     direct   req/s %9.0f  p50 %7.3f ms  p99 %7.3f ms\n", rps["direct"], p50["direct"], p99["direct"]
    printf "mean     teal     req/s %9.0f  p50 %7.3f ms  p99 %7.3f ms\n", rps["teal"], p50["teal"], p99["teal"]
    printf "mean     haproxy  req/s %9.0f  p50 %7.3f ms  p99 %7.3f ms\n", rps["haproxy"], p50["haproxy"], p99["haproxy"]
    printf "ratio    teal/haproxy req/s = %.2f (aim >= 0.80)\n", rps["teal"] / rps["haproxy"]
    printf "added    p99 teal - direct = %.3f ms (aim < 1 ms); haproxy - direct = %.3f ms\n", p99["teal"] - p99["direct"], p99["haproxy"] - p99["direct"]
  }' "$work/results"
