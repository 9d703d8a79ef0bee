#!/usr/bin/env bash
# Rollback latency and weight convergence of a release-built 3-node Teal cluster
# (Benchmarks/deployments/bench.py, --only rollback,convergence), with their distributions, beside
# etcd's anchor in the same run: a put's round trip and a put's propagation to a watcher on every
# member (etcd_watch.py), what an etcd-based coordinator pays at least to publish a rollback or new
# weights. Ratios: Teal rollback (POST answered -> every listener only blue) / etcd put round trip,
# Teal convergence (generation proposed -> every node applied) / etcd put -> every watcher.
#
# Knobs: ROLLBACK_TRIALS (20), PUTS (100); arguments go to bench.py (e.g. --linear-step 5).
set -uo pipefail
source "$(dirname "$0")/common.sh"
trap anchors_cleanup EXIT INT TERM

ROLLBACK_TRIALS="${ROLLBACK_TRIALS:-20}"
PUTS="${PUTS:-100}"
anchors_need etcd:etcd-server etcdctl:etcd-client openssl:openssl curl:curl python3:python3
anchors_build

echo "# Teal deployments (release build), load $(load)"
python3 "$PACKAGE_DIR/Benchmarks/deployments/bench.py" --teal "$TEAL" --demo "$TEAL_DEMO" \
  --peer-port "$TEAL_PEER_PORT" --api-port "$TEAL_API_PORT" --production-port 18580 --test-port 18581 \
  --only rollback,convergence --rollback-trials "$ROLLBACK_TRIALS" --json "$work/teal.json" --logs "$work/teal-logs" "$@" \
  | tail -n 20
echo "# etcd anchor (3 members, peer TLS), load $(load)"
etcd_up "$work/etcd"
python3 "$anchors_dir/etcd_watch.py" --port "$ETCD_CLIENT_PORT" --leader "$(etcd_leader)" --puts "$PUTS" --json "$work/etcd.json"
etcd_down
echo "# load at the end $(load)"

python3 - "$work/teal.json" "$work/etcd.json" <<'EOF'
import json, sys
teal, etcd = (json.load(open(p)) for p in sys.argv[1:])

def dist(values):
    o = sorted(values)
    at = lambda p: o[min(len(o), max(1, int(-(-p * len(o) // 100)))) - 1]
    return {"n": len(o), "min": o[0], "p10": at(10), "p25": at(25), "p50": at(50), "p75": at(75), "p90": at(90),
            "p99": at(99), "max": o[-1]}

def show(name, d):
    print(f"{name}: " + "  ".join(f"n {v}" if k == "n" else f"{k} {v:.0f}" for k, v in d.items()))

def histogram(values, width=50):
    edges = [0, 25, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, float("inf")]
    for low, high in zip(edges, edges[1:]):
        count = sum(1 for v in values if low <= v < high)
        if count:
            label = f"{low:.0f}-{high:.0f}" if high != float("inf") else f">= {low:.0f}"
            print(f"    {label:>10} ms {'#' * count} {count}")

trials = teal["rollback"]["trials"]
answer = [t["from_answer_ms"] for t in trials]
sent = [t["from_sent_ms"] for t in trials]
post = [t["post_ms"] for t in trials]
pairs = teal["convergence"]["all_pairs"]
linear = [p["ms"] for p in teal["convergence"]["pairs"]]
every = [p["ms"] for p in pairs]
print("\n# distributions (ms)")
show("Teal rollback, POST answered -> every listener only blue", dist(answer)); histogram(answer)
show("Teal rollback, POST sent -> every listener only blue", dist(sent))
show("Teal rollback POST round trip (forwarded, committed, applied)", dist(post))
show("Teal convergence, LINEAR generations", dist(linear)); histogram(linear)
show("Teal convergence, every generation of the run", dist(every))
show("etcd put round trip", etcd["put_round_trip_ms"])
show("etcd put -> every member's watcher", etcd["put_to_every_watcher_ms"])
e_put, e_watch = etcd["put_round_trip_ms"], etcd["put_to_every_watcher_ms"]
print("\n# ratios")
for name, values, anchor, aname in [
        ("rollback (answered)", answer, e_put, "etcd put round trip"),
        ("rollback (sent)", sent, e_watch, "etcd put -> every watcher"),
        ("convergence (every generation)", every, e_watch, "etcd put -> every watcher"),
        ("convergence (LINEAR)", linear, e_watch, "etcd put -> every watcher")]:
    d = dist(values)
    print(f"Teal {name} / {aname}: p50 {d['p50'] / anchor['p50']:.2f}x ({d['p50']:.0f} vs {anchor['p50']:.0f} ms), "
          f"p99 {d['p99'] / anchor['p99']:.2f}x ({d['p99']:.0f} vs {anchor['p99']:.0f} ms)")
print(f"Teal load before/after: {teal.get('load_before')} / {teal.get('load_after')}")
EOF
