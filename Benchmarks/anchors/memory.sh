#!/usr/bin/env bash
# Start-up to ready and idle memory of a 3-node Teal cluster beside a 3-member etcd 3.4 cluster with
# peer TLS, in the same run (REPEAT rounds, alternating):
#   new cluster -> ready: Teal `teal cluster up` of a new directory (it also makes the certificates,
#     token and configs) until a leader with every node up; etcd: three members launched on empty data
#     directories (certificates made beforehand, not timed) until every member reports a leader;
#   restart -> ready: every node stopped (Teal `cluster down`, data kept; etcd SIGTERM) and started
#     again on its data until the same condition;
#   idle memory: VmRSS of each node process SETTLE s (default 20) after the cluster was ready, no
#     service and no key written.
# Knobs: REPEAT (3), SETTLE (20), plus those of common.sh.
set -uo pipefail
source "$(dirname "$0")/common.sh"
trap anchors_cleanup EXIT INT TERM

REPEAT="${REPEAT:-3}"
SETTLE="${SETTLE:-20}"
anchors_need etcd:etcd-server etcdctl:etcd-client openssl:openssl curl:curl python3:python3
anchors_build
echo "# $(etcd --version | head -1); $(nproc) cores; load at the start $(load)"

now() { date +%s.%N; }
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

etcd_ready() { # every member reports a leader
  for _ in $(seq 1 600); do
    local ok=0
    for i in 1 2 3; do
      curl -s -m 1 -X POST -d '{}' "http://127.0.0.$i:$ETCD_CLIENT_PORT/v3/maintenance/status" | grep -q '"leader":"[1-9]' && ok=$((ok + 1))
    done
    ((ok == 3)) && return 0
    sleep 0.02
  done
  echo "etcd not ready within 12 s" >&2
  exit 1
}

results="$work/results"
for round in $(seq 1 "$REPEAT"); do
  # Teal: a new cluster.
  dir="$work/teal-$round"
  before="$(load)"
  start="$(now)"
  teal_up "$dir"
  new="$(elapsed "$start" "$(now)")"
  sleep "$SETTLE"
  rss=""
  for i in 1 2 3; do rss+="$(rss_mb "$(cat "$dir/n$i/node.pid")") "; done
  "$TEAL" cluster down --dir "$dir" --timeout 10 >/dev/null 2>&1
  start="$(now)"
  "$TEAL" cluster up --dir "$dir" --wait 120 >/dev/null 2>&1 || { echo "teal restart failed" >&2; exit 1; }
  restart="$(elapsed "$start" "$(now)")"
  "$TEAL" cluster down --dir "$dir" --timeout 10 >/dev/null 2>&1
  echo "teal round $round: new cluster -> ready $new s; restart -> ready $restart s; idle RSS MB: $rss; load $before"
  echo "teal $new $restart $rss" >>"$results"

  # etcd: a new cluster.
  etcd_dir="$work/etcd-$round"
  etcd_flags=()
  mkdir -p "$etcd_dir"
  etcd_certs "$etcd_dir/certs"
  before="$(load)"
  start="$(now)"
  for i in 1 2 3; do etcd_member "$i"; done
  etcd_ready
  new="$(elapsed "$start" "$(now)")"
  sleep "$SETTLE"
  rss=""
  for i in 1 2 3; do rss+="$(rss_mb "${etcd_pid[$i]}") "; done
  etcd_down
  start="$(now)"
  for i in 1 2 3; do etcd_member "$i"; done
  etcd_ready
  restart="$(elapsed "$start" "$(now)")"
  etcd_down
  echo "etcd round $round: new cluster -> ready $new s; restart -> ready $restart s; idle RSS MB: $rss; load $before"
  echo "etcd $new $restart $rss" >>"$results"
done

echo
awk '
  { n[$1]++; new[$1] += $2; restart[$1] += $3; for (i = 4; i <= 6; i++) { rss[$1] += $i; m[$1]++ }
    if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2; if ($2 > hi[$1]) hi[$1] = $2 }
  END {
    for (k in n) printf "mean %s: new cluster -> ready %.2f s (%.2f-%.2f), restart -> ready %.2f s, idle RSS %.1f MB per node\n", k, new[k] / n[k], lo[k], hi[k], restart[k] / n[k], rss[k] / m[k]
    printf "ratio Teal / etcd: new cluster %.2fx, restart %.2fx, idle RSS %.2fx\n", (new["teal"] / n["teal"]) / (new["etcd"] / n["etcd"]), (restart["teal"] / n["teal"]) / (restart["etcd"] / n["etcd"]), (rss["teal"] / m["teal"]) / (rss["etcd"] / m["etcd"])
  }' "$results"
echo "# load at the end $(load)"
