#!/usr/bin/env python3
"""The etcd anchor of the deployment figures: a put's round trip and its propagation to watchers.

An etcd-based coordinator would publish a rollback or new weights with one put and every node would
learn it through a watch. Against a running 3-member etcd cluster (client URLs
http://127.0.0.N:PORT), one watcher per member (POST /v3/watch, JSON gateway, streamed) and N puts
of one key to the leader, --gap ms apart: figure 1 is the put's round trip (sent -> answered, the
write committed); figure 2 is put sent -> the last of the three watchers received the event (the
counterpart of Teal's "routes generation proposed -> every node applied it"). Prints both
distributions; --json FILE writes them. Only the Python 3 standard library.
"""

import argparse
import base64
import http.client
import json
import sys
import threading
import time


def b64(text):
    return base64.b64encode(text.encode()).decode()


def distribution(values):
    ordered = sorted(values)

    def at(p):
        return ordered[min(len(ordered), max(1, int(-(-p * len(ordered) // 100)))) - 1]

    return {"n": len(ordered), "min": ordered[0], "p10": at(10), "p25": at(25), "p50": at(50), "p75": at(75),
            "p90": at(90), "p99": at(99), "max": ordered[-1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=12379)
    parser.add_argument("--leader", type=int, required=True, help="the leader's index (1-3)")
    parser.add_argument("--puts", type=int, default=100)
    parser.add_argument("--gap", type=float, default=50, help="ms between puts")
    parser.add_argument("--json")
    args = parser.parse_args()
    key = b64("anchors/weights")
    received = {}  # revision -> [receipt times]
    lock = threading.Lock()
    ready = threading.Barrier(4)

    def watch(host):
        connection = http.client.HTTPConnection(host, args.port, timeout=60)
        connection.request("POST", "/v3/watch", body=json.dumps({"create_request": {"key": key}}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        first = True
        while True:
            line = response.readline()
            if not line:
                return
            now = time.monotonic()
            if first:  # the "created" answer
                first = False
                ready.wait()
                continue
            result = json.loads(line).get("result", {})
            for event in result.get("events", []):
                with lock:
                    received.setdefault(int(event["kv"]["mod_revision"]), []).append(now)

    for i in (1, 2, 3):
        threading.Thread(target=watch, args=(f"127.0.0.{i}",), daemon=True).start()
    ready.wait(timeout=30)
    writer = http.client.HTTPConnection(f"127.0.0.{args.leader}", args.port, timeout=10)
    puts = []  # (sent, answered, revision)
    for n in range(args.puts):
        sent = time.monotonic()
        writer.request("POST", "/v3/kv/put", body=json.dumps({"key": key, "value": b64(f"generation {n}")}),
                       headers={"Content-Type": "application/json"})
        answer = json.loads(writer.getresponse().read())
        puts.append((sent, time.monotonic(), int(answer["header"]["revision"])))
        time.sleep(args.gap / 1000)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if all(len(received.get(r, [])) == 3 for _, _, r in puts):
                break
        time.sleep(0.05)
    round_trip = [(answered - sent) * 1000 for sent, answered, _ in puts]
    with lock:
        propagation = [(max(received[r]) - sent) * 1000 for sent, _, r in puts if len(received.get(r, [])) == 3]
    missing = len(puts) - len(propagation)
    result = {"put_round_trip_ms": distribution(round_trip), "put_to_every_watcher_ms": distribution(propagation),
              "missing": missing}
    for name in ("put_round_trip_ms", "put_to_every_watcher_ms"):
        d = result[name]
        print(f"etcd {name}: " + "  ".join(f"{k} {v:.1f}" if k != "n" else f"n {v}" for k, v in d.items()))
    if missing:
        print(f"etcd: {missing} puts not seen by every watcher within 10 s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()
