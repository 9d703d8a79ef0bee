#!/usr/bin/env bash
# Writes through the API of a 3-node Teal cluster beside a 3-member etcd 3.4 cluster with peer TLS,
# both on loopback in the same run, with the same client (wrk and a Lua script per API):
#   Teal: PUT /v1/variables/bench/kN (teal_put.lua: bearer token, JSON, an Idempotency-Key each)
#   etcd: POST /v3/kv/put through etcd's JSON gateway (etcd_put.lua: base64 key and value)
# 1,000 keys, 128-byte values; to the leader and to a follower; at 1 and 64 connections. Both
# clusters run for the whole script; the measurements alternate (Teal, then etcd, per case), and each
# line carries the load average read just before it and the CPU time (user + system) the three node
# processes used per write (steadier than throughput on a shared machine). Prints each case's ratio
# Teal / etcd.
#
# Knobs: DURATION (s per measurement, default 20), WARMUP (s, default 3), CLIENTS ("1 64"), ROUNDS
# (default 1), VALUE_BYTES (128), KEYS (1000), IDEMPOTENCY (1; 0: Teal writes without an
# Idempotency-Key, as etcd's puts carry none), plus those of common.sh. Needs wrk, etcd and openssl
# (installed when missing).
set -uo pipefail
source "$(dirname "$0")/common.sh"
trap anchors_cleanup EXIT INT TERM

DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-3}"
CLIENTS="${CLIENTS:-1 64}"
ROUNDS="${ROUNDS:-1}"
VALUE_BYTES="${VALUE_BYTES:-128}"
KEYS="${KEYS:-1000}"
IDEMPOTENCY="${IDEMPOTENCY:-1}"

anchors_need wrk:wrk etcd:etcd-server etcdctl:etcd-client openssl:openssl curl:curl python3:python3
anchors_build

log "starting a 3-node Teal cluster and a 3-member etcd cluster (peer TLS), load $(load)"
teal_up "$work/teal"
etcd_up "$work/etcd"
token="$(teal_token "$work/teal")"
echo "# $(etcd --version | head -1); teal $("$TEAL" --version 2>/dev/null); $(nproc) cores"
echo "# wrk ${DURATION}s per measurement after ${WARMUP}s warm-up, $KEYS keys, $VALUE_BYTES-byte values, Teal Idempotency-Key: $IDEMPOTENCY"

# CPU seconds (user + system) used so far by a system's three node processes.
cpu_seconds() { # system
  local pids=()
  if [[ "$1" == teal ]]; then
    for i in 1 2 3; do pids+=("$(cat "$work/teal/n$i/node.pid")"); done
  else
    pids=("${etcd_pid[1]}" "${etcd_pid[2]}" "${etcd_pid[3]}")
  fi
  local ticks
  ticks="$(getconf CLK_TCK)"
  for pid in "${pids[@]}"; do
    sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
  done | awk -v t="$ticks" '{s += $1} END {printf "%.2f", s / t}'
}

# Runs wrk and prints "system target clients rps p50_ms p99_ms errors cpu_ms_per_write load".
measure() { # system target(leader|follower) clients
  local system="$1" target="$2" clients="$3" host port script args index
  if [[ "$system" == teal ]]; then
    index="$(teal_leader "$work/teal")"
    port=$TEAL_API_PORT script="$anchors_dir/teal_put.lua" args=("$token" "$KEYS" "$VALUE_BYTES" "$([[ "$IDEMPOTENCY" == 1 ]] && echo key || echo nokey)")
  else
    index="$(etcd_leader)"
    port=$ETCD_CLIENT_PORT script="$anchors_dir/etcd_put.lua" args=("$KEYS" "$VALUE_BYTES")
  fi
  [[ "$target" == follower ]] && index=$((index % 3 + 1))
  host="127.0.0.$index"
  local threads=$((clients < 2 ? 1 : 2))
  wrk -t"$threads" -c"$clients" -d"${WARMUP}s" --timeout 10s -s "$script" "http://$host:$port" -- "${args[@]}" >/dev/null 2>&1
  local before out
  before="$(load)"
  local cpu
  cpu="$(cpu_seconds "$system")"
  out="$(wrk -t"$threads" -c"$clients" -d"${DURATION}s" --timeout 10s -s "$script" "http://$host:$port" -- "${args[@]}" | grep '^ANCHOR')"
  cpu="$(awk -v a="$cpu" -v b="$(cpu_seconds "$system")" 'BEGIN {printf "%.2f", b - a}')"
  python3 - "$system" "$target" "$clients" "$before" "$out" "$cpu" <<'EOF'
import sys
system, target, clients, load, line, cpu = sys.argv[1:]
f = dict(kv.split("=") for kv in line.split()[1:])
errors = sum(int(f[k]) for k in ("non2xx", "connect", "read", "write", "timeout"))
print(f"{system:5} {target:8} {'c=' + clients:5} {float(f['rps']):9.1f} writes/s  p50 {int(f['p50_us'])/1000:8.2f} ms"
      f"  p99 {int(f['p99_us'])/1000:8.2f} ms  max {int(f['max_us'])/1000:8.1f} ms  errors {errors}"
      f"  cpu {float(cpu) * 1000 / max(1, int(f['requests'])):.2f} ms/write  load {load}")
EOF
}

results="$work/results"
for round in $(seq 1 "$ROUNDS"); do
  for clients in $CLIENTS; do
    for target in leader follower; do
      for system in teal etcd; do
        line="$(measure "$system" "$target" "$clients")"
        echo "$line"
        echo "$round $line" >>"$results"
      done
    done
  done
done

echo
echo "# ratios Teal / etcd (writes/s: aim >= 1.0; p99: aim <= 1.0), per round"
python3 - "$results" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    rnd, system, target, clients = p[0], p[1], p[2], p[3]
    rps = float(p[4]); p50 = float(p[7]); p99 = float(p[10]); cpu = float(p[p.index("cpu") + 1])
    rows[(rnd, target, clients, system)] = (rps, p50, p99, cpu)
for (rnd, target, clients, system), (rps, p50, p99, cpu) in sorted(rows.items()):
    if system != "teal" or (rnd, target, clients, "etcd") not in rows:
        continue
    e = rows[(rnd, target, clients, "etcd")]
    print(f"round {rnd} {target:8} {clients}: writes/s {rps / e[0]:.2f}x ({rps:.0f} vs {e[0]:.0f}), "
          f"p50 {p50 / e[1]:.2f}x, p99 {p99 / e[2]:.2f}x ({p99:.1f} vs {e[2]:.1f} ms), "
          f"CPU per write {cpu / e[3]:.2f}x ({cpu:.2f} vs {e[3]:.2f} ms)")
EOF
echo "# load at the end: $(load)"
