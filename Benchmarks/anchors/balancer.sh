#!/usr/bin/env bash
# Teal's load balancer (a real node's production listener) beside HAProxy 2.6 on the same targets,
# in steady state and during a deployment, one run:
#   a 3-node Teal cluster runs service `bench` (2 teal-demo tasks, `--threads 1`); HAProxy (2 threads,
#   round-robin, keep-alive and connection reuse, as Benchmarks/proxy) gets the same two tasks as
#   its blue servers, plus two green servers at weight 0 (teal-demo processes started here).
#   1. steady state, ROUNDS rounds: wrk through n1's listener, through HAProxy, and directly to one task;
#   2. HAProxy during a shift: green 0 -> 100 % in STEP_PERCENT steps every STEP_SECONDS through
#      HAProxy's runtime API (`set weight`), blue to 0 at the end, while wrk runs through HAProxy;
#   3. Teal during a deployment: a LINEAR deployment (the same steps and step bake, bake 1 s) of a new
#      revision while wrk runs through n1's listener: new tasks start, pass health checks, the weights
#      move through the log, the old tasks drain and stop.
# wrk -t THREADS -c CONNECTIONS for DURATION s (steady) and DEPLOY_SECONDS s (2, 3); every line has the
# load average read before it. Needs wrk and haproxy (installed when missing).
# Knobs: DURATION (10), ROUNDS (2), CONNECTIONS (32), THREADS (2), STEP_PERCENT (20), STEP_SECONDS (2),
# DEPLOY_SECONDS (15), LISTEN_PORT (18680), HAPROXY_PORT (18690), GREEN_PORT (18692, and +1).
set -uo pipefail
source "$(dirname "$0")/common.sh"
trap anchors_cleanup EXIT INT TERM

DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
STEP_PERCENT="${STEP_PERCENT:-20}"
STEP_SECONDS="${STEP_SECONDS:-2}"
DEPLOY_SECONDS="${DEPLOY_SECONDS:-15}"
LISTEN_PORT="${LISTEN_PORT:-18680}"
HAPROXY_PORT="${HAPROXY_PORT:-18690}"
GREEN_PORT="${GREEN_PORT:-18692}"

anchors_need wrk:wrk haproxy:haproxy curl:curl python3:python3
anchors_build
echo "# $(haproxy -v | head -1); wrk -t$THREADS -c$CONNECTIONS; $(nproc) cores; load at the start $(load)"

teal_up "$work/teal"
token="$(teal_token "$work/teal")"
api="http://127.0.0.1:$TEAL_API_PORT"
auth=(-H "Authorization: Bearer $token")

spec() { # version strategy-lines
  cat <<EOF
name: bench
desiredCount: 2
productionPort: $LISTEN_PORT
testPort: $((LISTEN_PORT + 1))
task:
  command: "$TEAL_DEMO"
  args: ["--threads", "1"]
  env:
    TEAL_DEMO_VERSION: "$1"
  healthCheck:
    path: /health
    interval: 1s
    timeout: 1s
    healthyThreshold: 1
    unhealthyThreshold: 3
deployment:
  strategy: LINEAR
  linear: {stepPercent: $STEP_PERCENT, stepBakeTime: ${STEP_SECONDS}s}
  bakeTime: 1s
  abortScaleDownDelay: 0s
EOF
}

# The healthy tasks of the serving revision, as "address:port" lines (waits for 2).
serving_tasks() {
  for _ in $(seq 1 600); do
    local out
    out="$(curl -s -m 5 "${auth[@]}" "$api/v1/services/bench" | python3 -c 'import json,sys
d=json.load(sys.stdin); c=d["currentRevision"]
t=[x for x in d.get("tasks",[]) if x["revision"]==c and x["healthy"] and x["desired"]=="running"]
print("\n".join(x["address"] + ":" + str(x["port"]) for x in t) if len(t) >= 2 else "")' 2>/dev/null)"
    if [[ -n "$out" ]] && curl -s -m 2 -o /dev/null "http://127.0.0.1:$LISTEN_PORT/"; then echo "$out"; return 0; fi
    sleep 0.2
  done
  echo "service bench not serving within 120 s" >&2
  exit 1
}

spec 1.0.0 | curl -s -m 30 "${auth[@]}" -H 'Content-Type: application/yaml' --data-binary @- "$api/v1/services" >/dev/null
mapfile -t blue < <(serving_tasks)
log "blue tasks: ${blue[*]}"

for i in 0 1; do
  "$TEAL_DEMO" --port $((GREEN_PORT + i)) --threads 1 --version 2.0.0-haproxy >"$work/green-$i.log" 2>&1 &
  anchor_pids+=($!)
  wait_for_port 127.0.0.1 $((GREEN_PORT + i))
done

cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
  stats socket $work/haproxy.sock mode 600 level admin
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
  server b1 ${blue[0]} weight 100
  server b2 ${blue[1]} weight 100
  server g1 127.0.0.1:$GREEN_PORT weight 0
  server g2 127.0.0.1:$((GREEN_PORT + 1)) weight 0
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
anchor_pids+=($!)
wait_for_port 127.0.0.1 "$HAPROXY_PORT"

haproxy_cmd() { python3 -c 'import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall((sys.argv[2]+"\n").encode()); print(s.recv(65536).decode().strip())' "$work/haproxy.sock" "$1"; }

# wrk with --latency; prints "name req/s p50_ms p99_ms non2xx socket_errors load".
cat >"$work/parse_wrk.py" <<'EOF'
import re, sys
name, load = sys.argv[1], sys.argv[2]
text = sys.stdin.read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v); x = float(m[1])
    return x / 1000 if m[2] == "us" else x * 1000 if m[2] == "s" else x
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1])
p50 = ms(re.search(r"\n\s+50%\s+(\S+)", text)[1]); p99 = ms(re.search(r"\n\s+99%\s+(\S+)", text)[1])
non2xx = int(re.search(r"Non-2xx or 3xx responses: (\d+)", text)[1]) if "Non-2xx" in text else 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = sum(int(x) for x in m.groups()) if m else 0
print(f"{name:16} {rps:9.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:8.2f} ms  non-2xx {non2xx}  socket errors {errors}  load {load}")
EOF
run_wrk() { # name url seconds
  local before out
  before="$(load)"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$3s" --timeout 10s --latency "$2")"
  python3 "$work/parse_wrk.py" "$1" "$before" <<<"$out" || { echo "$1: wrk output not parsed:"; echo "$out"; } >&2
}

results="$work/results"
warm() { wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$1" >/dev/null 2>&1; }
echo "# steady state, ${DURATION}s each"
for round in $(seq 1 "$ROUNDS"); do
  for pair in "direct http://${blue[0]}/" "teal http://127.0.0.1:$LISTEN_PORT/" "haproxy http://127.0.0.1:$HAPROXY_PORT/"; do
    warm "${pair#* }"
    line="$(run_wrk "${pair%% *}" "${pair#* }" "$DURATION")"
    echo "$line"
    echo "$line" >>"$results"
  done
done

echo "# HAProxy during a weight shift (green +$STEP_PERCENT % every ${STEP_SECONDS}s through the runtime API)"
(
  sleep 2
  percent=0
  while ((percent < 100)); do
    percent=$((percent + STEP_PERCENT))
    ((percent > 100)) && percent=100
    for s in g1 g2; do haproxy_cmd "set weight targets/$s $percent" >/dev/null; done
    for s in b1 b2; do haproxy_cmd "set weight targets/$s $((100 - percent))" >/dev/null; done
    sleep "$STEP_SECONDS"
  done
) &
shifter=$!
anchor_pids+=($shifter)
run_wrk "haproxy-shift" "http://127.0.0.1:$HAPROXY_PORT/" "$DEPLOY_SECONDS" | tee -a "$results"
wait "$shifter"
echo "# HAProxy weights after the shift: $(haproxy_cmd 'show servers state targets' | awk 'NR > 2 {printf "%s=%s ", $4, $8}')"

echo "# Teal during a LINEAR deployment ($STEP_PERCENT % every ${STEP_SECONDS}s, bake 1 s) of 2 new tasks"
(
  sleep 2
  spec 2.0.0 | curl -s -m 30 "${auth[@]}" -H 'Content-Type: application/yaml' --data-binary @- \
    "$api/v1/services/bench/deployments" >"$work/deployment.json"
) &
deployer=$!
anchor_pids+=($deployer)
run_wrk "teal-deployment" "http://127.0.0.1:$LISTEN_PORT/" "$DEPLOY_SECONDS" | tee -a "$results"
wait "$deployer"
id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/deployment.json")"
curl -s -m 10 "${auth[@]}" "$api/v1/deployments/$id" | python3 -c 'import json,sys
from datetime import datetime
d=json.load(sys.stdin); t=d["stageTimeline"]
p=lambda s: datetime.fromisoformat(s.replace("Z","+00:00"))
took = (p(d["updatedAt"]) - p(t[0]["enteredAt"])).total_seconds()
print("# deployment", d["id"], d["status"], "stage", d["stage"], f"{took:.1f} s from", t[0]["stage"], "to its last update")'

echo
python3 - "$results" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) > 6 and p[2] == "req/s":
        rows.setdefault(p[0], []).append((float(p[1]), float(p[4]), float(p[7]), int(p[10]), int(p[13])))
mean = lambda k, i: sum(r[i] for r in rows[k]) / len(rows[k])
for k in rows:
    print(f"mean {k:16} {mean(k, 0):9.0f} req/s  p50 {mean(k, 1):7.2f} ms  p99 {mean(k, 2):8.2f} ms  "
          f"non-2xx {sum(r[3] for r in rows[k])}  socket errors {sum(r[4] for r in rows[k])}")
print(f"ratio steady teal/haproxy req/s {mean('teal', 0) / mean('haproxy', 0):.2f}x; p99 {mean('teal', 2) / mean('haproxy', 2):.2f}x; "
      f"added p99 over direct: teal {mean('teal', 2) - mean('direct', 2):.2f} ms, haproxy {mean('haproxy', 2) - mean('direct', 2):.2f} ms")
if "teal-deployment" in rows and "haproxy-shift" in rows:
    print(f"ratio during a deployment teal/haproxy req/s {mean('teal-deployment', 0) / mean('haproxy-shift', 0):.2f}x; "
          f"p99 {mean('teal-deployment', 2) / mean('haproxy-shift', 2):.2f}x")
EOF
echo "# load at the end $(load)"
