#!/usr/bin/env python3
"""Leader failover beside etcd: kill -9 of the leader to the first write committed by the new leader.

Run by failover.sh (which installs etcd and builds teal). For each configuration, a new 3-node
cluster on loopback (Teal: `teal cluster up`; etcd 3.4: three members with peer TLS), then N trials:

  1. find the leader; check that writes through the survivors succeed;
  2. a launcher starts a new write attempt every --interval ms (default 10), each on its own thread
     and its own new connection to the next survivor, with a 3 s timeout: Teal `PUT
     /v1/variables/failover/kN` (with an Idempotency-Key), etcd `POST /v3/kv/put` (JSON gateway).
     Survivors forward a write to the leader and answer 200 only once it is committed, so the first
     200 answer to an attempt *sent after the kill* is the first write committed by the new leader;
  3. `kill -9` of the leader's process (its PID), t0; the figure is the receipt time of that first
     200 answer minus t0 (resolution: the launch interval plus one write's round trip);
  4. restart the killed member (Teal: `teal cluster up --dir`, which restarts missing nodes; etcd: the
     same command line on its data directory), wait until every member is up and a write succeeds,
     and let it settle (--settle s) before the next trial.

The same client code, the same attempt rate and the same survivors' choice for both systems. Prints
every trial, then p50/p90/p99/max per configuration with the load average (1 min) at each trial.
Only the Python 3 standard library.
"""

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HOSTS = [f"127.0.0.{i}" for i in (1, 2, 3)]


def log(message):
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {message}", file=sys.stderr, flush=True)


def load():
    with open("/proc/loadavg") as file:
        return float(file.read().split()[0])


def percentile(values, p):
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))  # nearest rank
    return ordered[min(rank, len(ordered)) - 1]


def request(host, port, method, path, body=None, headers=None, timeout=3.0):
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class Teal:
    name = "teal"

    def __init__(self, args, directory, election_ms=None):
        self.args = args
        self.dir = directory
        self.election_ms = election_ms
        self.port = args.teal_api_port
        self.token = None
        self.label = "Teal defaults" if not election_ms else f"Teal, election timeout {election_ms} ms"

    def teal(self, *arguments):
        completed = subprocess.run([self.args.teal, *arguments], capture_output=True, text=True, timeout=180)
        if completed.returncode != 0:
            raise RuntimeError(f"teal {' '.join(arguments)}: {completed.stderr.strip() or completed.stdout.strip()}")

    def up(self):
        arguments = ["cluster", "up", "--dir", self.dir, "--wait", "120"]
        if not os.path.exists(os.path.join(self.dir, "cluster.yaml")):
            arguments += ["--api-port", str(self.port), "--peer-port", str(self.args.teal_peer_port)]
            if self.election_ms:
                arguments += ["--election-timeout-ms", str(self.election_ms)]
        self.teal(*arguments)
        with open(os.path.join(self.dir, "token")) as file:
            self.token = file.read().strip()

    def down(self):
        if os.path.exists(os.path.join(self.dir, "cluster.yaml")):
            subprocess.run([self.args.teal, "cluster", "down", "--dir", self.dir, "--timeout", "5"],
                           capture_output=True, timeout=120)

    def leader(self):
        """(index 0-2, pid) of the node that leads, from the nodes' own views."""
        for host in HOSTS:
            try:
                status, body = request(host, self.port, "GET", "/v1/cluster?stale=true",
                                       headers={"Authorization": f"Bearer {self.token}"}, timeout=1)
            except OSError:
                continue
            if status != 200:
                continue
            view = json.loads(body)
            leader = view.get("leader")
            if leader and any(m["id"] == leader and m["role"] == "leader" for m in view.get("members", [])):
                index = int(leader[1:]) - 1
                with open(os.path.join(self.dir, leader, "node.pid")) as file:
                    return index, int(file.read().strip())
        return None

    def all_up(self):
        """Every node answers and its own view has a leader and every member up."""
        for host in HOSTS:
            try:
                status, body = request(host, self.port, "GET", "/v1/cluster?stale=true",
                                       headers={"Authorization": f"Bearer {self.token}"}, timeout=3)
            except OSError:
                return False
            if status != 200:
                return False
            view = json.loads(body)
            if not view.get("leader") or len(view["members"]) != 3 or any(m["state"] != "up" for m in view["members"]):
                return False
        return True

    def write(self, host, n):
        return request(host, self.port, "PUT", f"/v1/variables/failover/k{n % 100}",
                       body=json.dumps({"value": f"v{n}"}),
                       headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                                "Idempotency-Key": str(uuid.uuid4())})[0]

    def restart(self, index):
        self.up()  # restarts the missing node and waits for a leader with every node up

    def recover(self):
        self.up()


class Etcd:
    name = "etcd"

    def __init__(self, args, directory, flags, label):
        self.args = args
        self.dir = directory
        self.flags = flags
        self.label = label
        self.port = args.etcd_client_port
        self.processes = [None, None, None]

    def certs(self):
        d = os.path.join(self.dir, "certs")
        os.makedirs(d, exist_ok=True)
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{d}/ca.key")
        run("openssl", "req", "-x509", "-new", "-key", f"{d}/ca.key", "-subj", "/CN=anchors-ca", "-days", "2",
            "-out", f"{d}/ca.pem")
        for i in (1, 2, 3):
            run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{d}/e{i}.key")
            run("openssl", "req", "-new", "-key", f"{d}/e{i}.key", "-subj", f"/CN=e{i}", "-out", f"{d}/e{i}.csr")
            with open(f"{d}/e{i}.ext", "w") as file:
                file.write(f"subjectAltName=IP:127.0.0.{i},IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3\n"
                           "extendedKeyUsage=serverAuth,clientAuth\n")
            run("openssl", "x509", "-req", "-in", f"{d}/e{i}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{d}/e{i}.ext", "-out", f"{d}/e{i}.pem")

    def start(self, index):
        i = index + 1
        peer = self.args.etcd_peer_port
        cluster = ",".join(f"e{j}=https://127.0.0.{j}:{peer}" for j in (1, 2, 3))
        data = os.path.join(self.dir, f"e{i}.data")
        state = "existing" if os.path.isdir(os.path.join(data, "member")) else "new"
        d = os.path.join(self.dir, "certs")
        command = [
            "etcd", "--name", f"e{i}", "--data-dir", data,
            "--listen-client-urls", f"http://127.0.0.{i}:{self.port}",
            "--advertise-client-urls", f"http://127.0.0.{i}:{self.port}",
            "--listen-peer-urls", f"https://127.0.0.{i}:{peer}",
            "--initial-advertise-peer-urls", f"https://127.0.0.{i}:{peer}",
            "--initial-cluster", cluster, "--initial-cluster-token", "anchors", "--initial-cluster-state", state,
            "--peer-cert-file", f"{d}/e{i}.pem", "--peer-key-file", f"{d}/e{i}.key",
            "--peer-trusted-ca-file", f"{d}/ca.pem", "--peer-client-cert-auth", "--logger", "zap", *self.flags,
        ]
        output = open(os.path.join(self.dir, f"e{i}.log"), "a")
        self.processes[index] = subprocess.Popen(command, stdout=output, stderr=output)
        output.close()

    def up(self):
        os.makedirs(self.dir, exist_ok=True)
        self.certs()
        for index in range(3):
            self.start(index)
        end = time.monotonic() + 60
        while not (self.leader() and self.all_up()):
            if time.monotonic() > end:
                raise RuntimeError("etcd: no leader with every member up within 60 s")
            time.sleep(0.1)

    def down(self):
        for process in self.processes:
            if process and process.poll() is None:
                process.terminate()
        for process in self.processes:
            if process:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def status(self, host):
        status, body = request(host, self.port, "POST", "/v3/maintenance/status", body="{}", timeout=1)
        return json.loads(body) if status == 200 else None

    def leader(self):
        for index, host in enumerate(HOSTS):
            try:
                view = self.status(host)
            except (OSError, ValueError):
                continue
            if view and view.get("leader") and view["leader"] == view["header"]["member_id"]:
                return index, self.processes[index].pid
        return None

    def all_up(self):
        for host in HOSTS:
            try:
                view = self.status(host)
            except (OSError, ValueError):
                return False
            if not view or not view.get("leader"):
                return False
        return True

    def write(self, host, n):
        import base64
        key = base64.b64encode(f"failover/k{n % 100}".encode()).decode()
        value = base64.b64encode(f"v{n}".encode()).decode()
        return request(host, self.port, "POST", "/v3/kv/put", body=json.dumps({"key": key, "value": value}),
                       headers={"Content-Type": "application/json"})[0]

    def recover(self):
        for index, process in enumerate(self.processes):
            if process.poll() is not None:
                self.start(index)

    def restart(self, index):
        self.processes[index].wait()
        self.start(index)
        end = time.monotonic() + 60
        while not self.all_up():
            if time.monotonic() > end:
                raise RuntimeError("etcd: the restarted member did not rejoin within 60 s")
            time.sleep(0.1)


class Writers:
    """A new write attempt every `interval` s on its own thread, round-robin over `hosts`."""

    def __init__(self, system, interval, limit=400):
        self.system = system
        self.interval = interval
        self.limit = threading.BoundedSemaphore(limit)  # at most this many attempts in flight
        self.records = []  # (sent, received, host, status or error)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.hosts = list(HOSTS)
        self.counter = 0

    def start(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            if self.limit.acquire(blocking=False):
                self.counter += 1
                host = self.hosts[self.counter % len(self.hosts)]
                threading.Thread(target=self.attempt, args=(host, self.counter), daemon=True).start()
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def attempt(self, host, n):
        sent = time.monotonic()
        try:
            outcome = self.system.write(host, n)
        except (OSError, http.client.HTTPException) as error:
            outcome = type(error).__name__
        received = time.monotonic()
        with self.lock:
            self.records.append((sent, received, host, outcome))
        self.limit.release()

    def first_success(self, after, hosts):
        with self.lock:
            oks = [r for r in self.records if r[0] >= after and r[3] == 200 and r[2] in hosts]
        return min(oks, key=lambda r: r[1]) if oks else None


def trial(system, writers, number, args):
    found = None
    end = time.monotonic() + 30
    while found is None and time.monotonic() < end:
        found = system.leader()
        if found is None:
            time.sleep(0.1)
    if found is None:
        raise RuntimeError("no leader within 30 s")
    index, pid = found
    survivors = [h for i, h in enumerate(HOSTS) if i != index]
    writers.hosts = survivors
    # Writes through the survivors succeed before the kill.
    mark = time.monotonic()
    end = mark + 30
    while writers.first_success(mark, survivors) is None:
        if time.monotonic() > end:
            raise RuntimeError("no write succeeded through the survivors within 30 s before the kill")
        time.sleep(0.02)
    at_load = load()
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    end = killed + 30
    first = None
    while first is None:
        if time.monotonic() > end:
            with writers.lock:
                outcomes = {}
                for r in writers.records:
                    if r[0] >= killed:
                        outcomes[(r[2], r[3])] = outcomes.get((r[2], r[3]), 0) + 1
            raise RuntimeError(f"no write committed within 30 s of the kill; attempts since: {outcomes}")
        time.sleep(0.005)
        first = writers.first_success(killed, survivors)
    ms = (first[1] - killed) * 1000
    with writers.lock:
        failed = sum(1 for r in writers.records if r[0] >= killed and r[1] <= first[1] and r[3] != 200)
    log(f"{system.label} trial {number}: killed member {index + 1} (pid {pid}); first write committed through "
        f"{first[2]} {ms:.0f} ms after the kill ({failed} attempts failed before it); load {at_load}")
    writers.hosts = list(HOSTS)
    system.restart(index)
    end = time.monotonic() + 120
    while not system.all_up():
        if time.monotonic() > end:
            raise RuntimeError("the restarted member is not up within 120 s")
        time.sleep(0.1)
    time.sleep(args.settle)
    return {"ms": ms, "load": at_load, "killed": index + 1, "failed_attempts": failed}


def run_configuration(system, args):
    log(f"{system.label}: starting, load {load()}")
    system.up()
    time.sleep(args.settle)
    writers = Writers(system, args.interval / 1000)
    writers.start()
    results = []
    try:
        for number in range(1, args.trials + 1):
            try:
                results.append(trial(system, writers, number, args))
            except RuntimeError as error:
                # Recorded, reported apart and left out of the distribution; the run goes on once
                # every member is up again.
                log(f"{system.label} trial {number} FAILED: {error}")
                results.append({"error": str(error), "load": load()})
                system.recover()
                end = time.monotonic() + 120
                while not system.all_up() and time.monotonic() < end:
                    time.sleep(0.5)
    finally:
        writers.stop.set()
        system.down()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teal", required=True)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--interval", type=float, default=10, help="ms between write attempts")
    parser.add_argument("--settle", type=float, default=2.0, help="s after a restarted member is up")
    parser.add_argument("--only", default="teal,etcd,etcd-tuned",
                        help="configurations: teal, etcd, etcd-tuned, teal-300, etcd-300")
    parser.add_argument("--teal-api-port", type=int, default=17370)
    parser.add_argument("--teal-peer-port", type=int, default=17300)
    parser.add_argument("--etcd-client-port", type=int, default=12379)
    parser.add_argument("--etcd-peer-port", type=int, default=12380)
    parser.add_argument("--json", help="write every trial to this file")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="teal-anchors-failover-")
    configurations = {
        "teal": lambda: Teal(args, os.path.join(work, "teal")),
        # etcd's defaults: heartbeat 100 ms, election timeout 1000 ms, pre-vote off (3.4).
        "etcd": lambda: Etcd(args, os.path.join(work, "etcd"), [], "etcd defaults"),
        # Teal's timeouts: election 1000 ms (randomized in [1, 2) s as etcd's), heartbeat a sixth of
        # it (167 ms), pre-vote on (Teal always pre-votes).
        "etcd-tuned": lambda: Etcd(args, os.path.join(work, "etcd-tuned"),
                                   ["--heartbeat-interval", "167", "--election-timeout", "1000", "--pre-vote"],
                                   "etcd tuned to Teal (heartbeat 167 ms, election 1000 ms, pre-vote)"),
        "teal-300": lambda: Teal(args, os.path.join(work, "teal-300"), election_ms=300),
        "etcd-300": lambda: Etcd(args, os.path.join(work, "etcd-300"),
                                 ["--heartbeat-interval", "50", "--election-timeout", "300", "--pre-vote"],
                                 "etcd tuned to Teal at 300 ms (heartbeat 50 ms, election 300 ms, pre-vote)"),
    }
    all_results = {}
    current = None

    def interrupted(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        for name in args.only.split(","):
            current = configurations[name]()
            all_results[name] = {"label": current.label, "trials": run_configuration(current, args)}
            current = None
    finally:
        if current:
            current.down()
        if os.environ.get("KEEP_WORK") == "1":
            log(f"node logs kept in {work}")
        else:
            subprocess.run(["rm", "-rf", work])
    print("# kill -9 of the leader -> first write committed by the new leader (ms), "
          f"{args.trials} trials each, attempts every {args.interval:g} ms")
    for name, result in all_results.items():
        values = [t["ms"] for t in result["trials"] if "ms" in t]
        loads = [t["load"] for t in result["trials"]]
        failed = [t["error"] for t in result["trials"] if "error" in t]
        if failed:
            print(f"{result['label']}: {len(failed)} trials failed: {failed}")
        if not values:
            continue
        print(f"{result['label']}: n {len(values)}  p50 {percentile(values, 50):.0f}  p90 {percentile(values, 90):.0f}  "
              f"p99 {percentile(values, 99):.0f}  max {max(values):.0f}  min {min(values):.0f}  "
              f"mean {sum(values) / len(values):.0f}  load {min(loads):.1f}-{max(loads):.1f}")
    if "teal" in all_results:
        teal = [t["ms"] for t in all_results["teal"]["trials"] if "ms" in t]
        for name in ("etcd", "etcd-tuned"):
            if name in all_results:
                other = [t["ms"] for t in all_results[name]["trials"] if "ms" in t]
                print(f"ratio Teal / {all_results[name]['label']}: p50 {percentile(teal, 50) / percentile(other, 50):.2f}x, "
                      f"p99 {percentile(teal, 99) / percentile(other, 99):.2f}x")
    if "teal-300" in all_results and "etcd-300" in all_results:
        a = [t["ms"] for t in all_results["teal-300"]["trials"] if "ms" in t]
        b = [t["ms"] for t in all_results["etcd-300"]["trials"] if "ms" in t]
        print(f"ratio Teal 300 ms / etcd 300 ms: p50 {percentile(a, 50) / percentile(b, 50):.2f}x, "
              f"p99 {percentile(a, 99) / percentile(b, 99):.2f}x")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(all_results, file, indent=1)


if __name__ == "__main__":
    main()
