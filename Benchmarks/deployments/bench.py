#!/usr/bin/env python3
"""Deployments in a local 3-node Teal cluster: rollback latency, controller failover, weight convergence.

Starts a cluster with the built `teal` (`teal cluster up --dir TMP`), creates the demo service
(3 tasks of teal-demo, task port from PORT, health check on /health) and measures, N trials each:

1. rollback: a BLUE_GREEN deployment with a long bake reaches BAKE_TIME at 100 % green while
   keep-alive clients poll every node's production listener and record `x-teal-revision`; then
   `POST /v1/deployments/{id}/rollback`. Figure: from the POST's answer (and from its sending) to
   the moment after which every listener only answers blue.
2. failover: a deployment whose HTTP hook (served here on loopback) answers IN_PROGRESS with
   callBackDelay 1 s; kill -9 of the leader's teal process; figures: kill -> first hook call with a
   higher `x-teal-term`, and kill -> first entry committed by the new leader. The killed node is
   restarted between trials. At the end every hook execution must have exactly one final result.
3. convergence: a LINEAR deployment; from the event log, each "routes generation N" note paired
   with its "converged: every live node applies routes generation N" note (log times).

Only the Python 3 standard library. Not run in CI. `teal cluster down --purge` always runs at the end,
also on Ctrl-C. See Docs/BENCHMARKS.md ("Deployments in the cluster") for the method and figures.
"""

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime

SERVICE = "demo"
NODES = 3


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values, p):
    """Nearest-rank percentile (p in 0...100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil
    return ordered[int(rank) - 1]


def summary(values_ms):
    if not values_ms:
        return {"n": 0}
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 1),
        "p99_ms": round(percentile(values_ms, 99), 1),
        "max_ms": round(max(values_ms), 1),
        "min_ms": round(min(values_ms), 1),
    }


def fmt(stats):
    if stats.get("n", 0) == 0:
        return "no samples"
    return (f"n={stats['n']} p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, "
            f"max {stats['max_ms']} ms (min {stats['min_ms']} ms)")


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception as error:  # noqa: BLE001
        return f"uptime failed: {error}"


def log_time(text):
    """An API time (ISO-8601 UTC, milliseconds optional) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class BenchError(Exception):
    pass


# MARK: - The node API


class API:
    """A small client of the node API: bearer token, JSON, a keep-alive connection per node, and
    retries on other nodes for refused connections and 503s."""

    def __init__(self, hosts, port, token):
        self.hosts = list(hosts)
        self.port = port
        self.token = token
        self.local = threading.local()

    def _connection(self, host):
        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = {}
        if host not in pool:
            pool[host] = http.client.HTTPConnection(host, self.port, timeout=10)
        return pool[host]

    def _drop(self, host):
        pool = getattr(self.local, "pool", {})
        connection = pool.pop(host, None)
        if connection:
            connection.close()

    def once(self, host, method, path, body=None, content_type=None):
        """One request to one node: (status, headers, parsed JSON or text). Raises on I/O errors."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        if method != "GET":
            headers["Idempotency-Key"] = f"bench-{os.getpid()}-{time.monotonic_ns()}"
        for reuse in (True, False):
            connection = self._connection(host)
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                self._drop(host)
                if not reuse or method != "GET":
                    raise
        text = data.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return response.status, dict(response.getheaders()), parsed

    def call(self, method, path, body=None, content_type=None, hosts=None, deadline=30.0, ok=(200, 201)):
        """Tries the nodes in turn until one answers with a status in `ok` (503 and refused
        connections move on; another status raises)."""
        end = time.monotonic() + deadline
        last = None
        while True:
            for host in hosts or self.hosts:
                try:
                    status, headers, parsed = self.once(host, method, path, body, content_type)
                except (ConnectionError, http.client.HTTPException, OSError) as error:
                    last = f"{host}: {error}"
                    continue
                if status in ok:
                    return parsed
                if status == 503:
                    last = f"{host}: 503 {parsed}"
                    continue
                raise BenchError(f"{method} {path} on {host}: {status} {parsed}")
            if time.monotonic() > end:
                raise BenchError(f"{method} {path}: no node answered within {deadline} s (last: {last})")
            time.sleep(0.2)


# MARK: - Traffic


class Clients:
    """Keep-alive clients against every node's production listener. Each connection sends GET /
    back to back (with `interval` between requests) and records (sent, received, host, revision,
    generation, status) on the monotonic clock."""

    def __init__(self, hosts, port, per_node, interval):
        self.hosts = hosts
        self.port = port
        self.per_node = per_node
        self.interval = interval
        self.records = []  # appended by every thread (atomic under the GIL)
        self.errors = []  # (failed at, host, error)
        self.stopping = threading.Event()
        self.threads = []

    def start(self):
        for host in self.hosts:
            for index in range(self.per_node):
                thread = threading.Thread(target=self._run, args=(host, index), daemon=True)
                thread.start()
                self.threads.append(thread)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _run(self, host, index):
        connection = None
        while not self.stopping.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(host, self.port, timeout=5)
            sent = time.monotonic()
            try:
                connection.request("GET", "/", headers={"Connection": "keep-alive"})
                response = connection.getresponse()
                response.read()
                received = time.monotonic()
                self.records.append((sent, received, host, response.getheader("x-teal-revision"),
                                     response.getheader("x-teal-generation"), response.status))
                if response.will_close:
                    connection.close()
                    connection = None
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                # Timed when it failed (a request in flight when a node is killed fails then).
                self.errors.append((time.monotonic(), host, f"{type(error).__name__}: {error}"))
                connection.close()
                connection = None
                time.sleep(0.05)
            if self.interval > 0:
                time.sleep(self.interval)
        if connection is not None:
            connection.close()

    def mark(self):
        return len(self.records), len(self.errors)


# MARK: - The hook


class Hook:
    """An HTTP hook on loopback: records every call (arrival on the monotonic clock, x-teal-term,
    executionId, attempt) and answers IN_PROGRESS (callBackDelay 1 s) while `hold` is set, else
    SUCCEEDED."""

    def __init__(self):
        self.calls = []
        self.hold = threading.Event()
        self.hold.set()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {}
                held = hook.hold.is_set() and payload.get("lifecycleStage") == "POST_TEST_TRAFFIC_SHIFT"
                hook.calls.append({
                    "at": arrived, "term": int(self.headers.get("x-teal-term") or 0),
                    "executionId": payload.get("executionId"), "attempt": payload.get("attempt"),
                    "stage": payload.get("lifecycleStage"), "answer": "IN_PROGRESS" if held else "SUCCEEDED"})
                answer = {"hookStatus": "IN_PROGRESS", "callBackDelay": 1} if held else {"hookStatus": "SUCCEEDED"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# MARK: - The benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = args.dir or tempfile.mkdtemp(prefix="teal-bench-")
        self.hosts = [f"127.0.0.{i}" for i in range(1, NODES + 1)]
        self.api = None
        self.clients = None
        self.hook = None
        self.version = 0
        self.results = {}
        # (listener host, from, to): a killed node's listener while it was down (its refused
        # connections are expected and counted apart).
        self.downtimes = []
        self.notes = []

    # The cluster.

    def teal(self, *arguments, check=True, timeout=180):
        command = [self.args.teal, *arguments]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and completed.returncode != 0:
            raise BenchError(f"{' '.join(command)} failed ({completed.returncode}): "
                             f"{completed.stderr.strip() or completed.stdout.strip()}")
        return completed

    def up(self):
        arguments = ["cluster", "up", "--dir", self.dir, "--wait", "120"]
        if not os.path.exists(os.path.join(self.dir, "cluster.yaml")):
            arguments += ["--peer-port", str(self.args.peer_port), "--api-port", str(self.args.api_port)]
            if self.args.election_timeout_ms:
                arguments += ["--election-timeout-ms", str(self.args.election_timeout_ms)]
        self.teal(*arguments)

    def save_logs(self):
        """The nodes' logs and the cluster's event log, kept after `down --purge` removes the directory."""
        os.makedirs(self.args.logs, exist_ok=True)
        for index in range(1, NODES + 1):
            source = os.path.join(self.dir, f"n{index}", "node.log")
            if os.path.exists(source):
                shutil.copy(source, os.path.join(self.args.logs, f"n{index}.log"))
        if self.api:
            try:
                events, after = [], 0
                while True:
                    page = self.api.call("GET", f"/v1/events?limit=1000&after={after}", deadline=10)["events"]
                    events += page
                    if len(page) < 1000:
                        break
                    after = page[-1]["index"]
                with open(os.path.join(self.args.logs, "events.json"), "w") as file:
                    json.dump(events, file, indent=1)
            except BenchError as error:
                log(f"events not saved: {error}")
        log(f"node logs and events in {self.args.logs}")

    def down(self):
        if not os.path.exists(os.path.join(self.dir, "cluster.yaml")):
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        ledgers = self.task_ledgers()
        completed = self.teal("cluster", "down", "--dir", self.dir, "--purge", check=False, timeout=120)
        if completed.returncode != 0:
            log(f"teal cluster down --purge failed: {completed.stderr.strip()}")
        # `down` stops the tasks of running nodes only: a node killed and not restarted (a failed
        # trial) leaves its tasks running, and --purge removes the ledger its restart would have
        # used. Stop what the ledgers name, if it is still the same process (start time).
        leaked = []
        for group, start, task in ledgers:
            if self.start_time(group) == start:
                try:
                    os.killpg(group, signal.SIGKILL)
                    leaked.append(task)
                except OSError:
                    pass
        if leaked:
            log(f"killed tasks that `teal cluster down` left running: {leaked}")
            self.results["tasks_left_by_down"] = leaked

    def task_ledgers(self):
        """Every node's task ledger (`<pgid> <starttime> <taskID>` lines, TealTasks' TaskLedger)."""
        entries = []
        for index in range(1, NODES + 1):
            path = os.path.join(self.dir, f"n{index}", "tasks", "tasks.ledger")
            try:
                with open(path) as file:
                    for line in file:
                        fields = line.split(" ", 2)
                        if len(fields) == 3 and int(fields[0]) > 1:
                            entries.append((int(fields[0]), int(fields[1]), fields[2].strip()))
            except (OSError, ValueError):
                continue
        return entries

    @staticmethod
    def start_time(pid):
        try:
            with open(f"/proc/{pid}/stat") as file:
                text = file.read()
            return int(text[text.rindex(")") + 2:].split(" ")[19])
        except (OSError, ValueError, IndexError):
            return None

    def cluster(self, host):
        """A node's own view (`?stale=true`: answers without a leader)."""
        status, _, parsed = self.api.once(host, "GET", "/v1/cluster?stale=true")
        if status != 200:
            raise BenchError(f"/v1/cluster on {host}: {status} {parsed}")
        return parsed

    def leader(self):
        for _ in range(200):
            for host in self.hosts:
                try:
                    view = self.cluster(host)
                except (BenchError, ConnectionError, OSError, http.client.HTTPException):
                    continue
                leader = view.get("leader")
                member = next((m for m in view.get("members", []) if m["id"] == leader), None)
                if leader and member and member.get("role") == "leader":
                    return leader, view["term"]
            time.sleep(0.1)
        raise BenchError("no leader within 20 s")

    def spec(self, strategy="BLUE_GREEN", bake="10m", extra="", hooks=""):
        self.version += 1
        return f"""name: {SERVICE}
desiredCount: 3
productionPort: {self.args.production_port}
testPort: {self.args.test_port}
task:
  command: {json.dumps(self.args.demo)}
  args: []
  env:
    TEAL_DEMO_VERSION: "1.0.{self.version}"
  healthCheck:
    path: /health
    interval: 1s
    timeout: 1s
    healthyThreshold: 1
    unhealthyThreshold: 3
deployment:
  strategy: {strategy}
  bakeTime: {bake}
  abortScaleDownDelay: 0s
{extra}{hooks}"""

    def create_service(self):
        spec = self.spec()
        self.api.call("POST", "/v1/services", body=spec.encode(), content_type="application/yaml")
        self.wait_serving()

    def service(self):
        return self.api.call("GET", f"/v1/services/{SERVICE}")

    def wait_serving(self, timeout=120):
        """Until the service's current revision has 3 healthy tasks and every listener answers it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            detail = self.service()
            current = detail["currentRevision"]
            healthy = [t for t in detail.get("tasks", [])
                       if t["revision"] == current and t["healthy"] and t["desired"] == "running"]
            if len(healthy) >= 3 and self.listeners_answer({current}, seconds=0.5):
                return current
            time.sleep(0.5)
        raise BenchError(f"service {SERVICE} not serving within {timeout} s")

    def listeners_answer(self, revisions, seconds):
        """Whether, over the last `seconds`, every listener answered and only with `revisions`."""
        since = time.monotonic() - seconds
        seen = {host: set() for host in self.hosts}
        for sent, _, host, revision, _, status in reversed(self.clients.records):
            if sent < since:
                break
            seen[host].add(revision if status == 200 else f"status {status}")
        return all(seen[host] and seen[host] <= revisions for host in self.hosts)

    def deploy(self, spec):
        view = self.api.call("POST", f"/v1/services/{SERVICE}/deployments", body=spec.encode(),
                             content_type="application/yaml")
        return view

    def deployment(self, identifier):
        return self.api.call("GET", f"/v1/deployments/{identifier}")

    def wait_deployment(self, identifier, condition, what, timeout=180):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            view = self.deployment(identifier)
            if condition(view):
                return view
            if view["status"] in ("SUCCESSFUL", "STOPPED", "ROLLBACK_SUCCESSFUL", "ROLLBACK_FAILED") \
                    and not condition(view):
                raise BenchError(f"deployment {identifier} ended {view['status']} waiting for {what}: "
                                 f"{view.get('reason')}")
            time.sleep(0.2)
        raise BenchError(f"deployment {identifier}: no {what} within {timeout} s")

    # 1. Rollback latency.

    def rollback_trial(self, trial):
        blue = self.wait_serving()
        view = self.deploy(self.spec(bake="30m"))
        identifier, green = view["id"], view["green"]
        self.wait_deployment(identifier, lambda v: v["stage"] == "BAKE_TIME" and v["weights"]["production"]["green"] == 100,
                             "BAKE_TIME at 100 % green")
        end = time.monotonic() + 30
        while not self.listeners_answer({green}, seconds=1.0):
            if time.monotonic() > end:
                raise BenchError(f"{identifier}: listeners do not answer only {green} at BAKE_TIME")
            time.sleep(0.1)
        start_records, start_errors = self.clients.mark()
        time.sleep(0.3)
        sent_wall = time.time()
        sent = time.monotonic()
        answer = self.api.call("POST", f"/v1/deployments/{identifier}/rollback")
        answered = time.monotonic()
        answered_wall = time.time()
        # Until every listener answered only blue for 2 s.
        end = time.monotonic() + 60
        while not (time.monotonic() > answered + 2.5 and self.listeners_answer({blue}, seconds=2.0)):
            if time.monotonic() > end:
                raise BenchError(f"{identifier}: listeners not on {blue} 60 s after the rollback")
            time.sleep(0.1)
        records = self.clients.records[start_records:]
        errors = self.clients.errors[start_errors:]
        last_green = {host: None for host in self.hosts}
        first_blue_after = {}
        unexpected = 0
        for record in records:
            s, r, host, revision, _, status = record
            if status != 200 or revision not in (blue, green):
                unexpected += 1
            elif revision == green and (last_green[host] is None or r > last_green[host][1]):
                last_green[host] = (s, r)
        for host in self.hosts:
            if last_green[host] is None:
                raise BenchError(f"{identifier}: no green answer on {host} before the rollback")
            after = [r for s, r, h, revision, _, status in records
                     if h == host and revision == blue and s > last_green[host][1]]
            if not after:
                raise BenchError(f"{identifier}: no blue answer on {host} after its last green one")
            first_blue_after[host] = min(after)
        # The moment after which every listener only answers blue: the latest receipt of a green
        # answer (conservative: the switch happened at or before it). `lower`: the latest sending of
        # a green answer (the switch happened after it).
        all_blue = max(r for _, r in last_green.values())
        all_blue_lower = max(s for s, _ in last_green.values())
        # The clients' resolution: the median time between two answers from one listener.
        gaps = []
        for host in self.hosts:
            times = sorted(r for _, r, h, *_ in records if h == host)
            gaps += [b - a for a, b in zip(times, times[1:])]
        resolution = percentile(gaps, 50) * 1000 if gaps else None
        final = self.wait_deployment(identifier, lambda v: v["status"] == "ROLLBACK_SUCCESSFUL", "ROLLBACK_SUCCESSFUL",
                                     timeout=120)
        internal = self.rollback_log_times(identifier)
        result = {
            "deployment": identifier, "blue": blue, "green": green,
            "post_ms": (answered - sent) * 1000,
            "from_answer_ms": (all_blue - answered) * 1000,
            "from_sent_ms": (all_blue - sent) * 1000,
            "from_answer_lower_ms": (all_blue_lower - answered) * 1000,
            "per_node_from_answer_ms": {h: round((last_green[h][1] - answered) * 1000, 1) for h in self.hosts},
            "resolution_ms": resolution,
            "requests": len(records), "errors": len(errors), "unexpected_answers": unexpected,
            "error_samples": [e[2] for e in errors[:3]],
            "post_answer_status": answer.get("status"),
            "final_status": final["status"],
            "sent_wall": sent_wall, "answered_wall": answered_wall,
            **internal,
        }
        if internal.get("requested_at") is not None and internal.get("blue_routes_at") is not None:
            result["log_requested_to_routes_ms"] = (internal["blue_routes_at"] - internal["requested_at"]) * 1000
        log(f"rollback {trial + 1}: {identifier} all blue {result['from_answer_ms']:.1f} ms after the answer "
            f"({result['from_sent_ms']:.1f} ms after sending; POST took {result['post_ms']:.1f} ms); "
            f"log: request -> blue routes {result.get('log_requested_to_routes_ms', float('nan')):.0f} ms; "
            f"{len(records)} requests, {len(errors)} errors, {unexpected} unexpected")
        return result

    def events(self):
        events, after = [], None
        while True:
            path = f"/v1/events?service={SERVICE}&limit=1000" + (f"&after={after}" if after is not None else "&after=0")
            page = self.api.call("GET", path)["events"]
            events += page
            if len(page) < 1000:
                return events
            after = page[-1]["index"]

    def rollback_log_times(self, identifier):
        """Log times of the rollback request and of the routes generation that puts blue back."""
        requested = blue_routes = None
        for event in self.events():
            message = event["message"]
            if not message.startswith(f"deployment {identifier}: "):
                continue
            if requested is None and "ROLLBACK_REQUESTED: rollback requested" in message:
                requested = log_time(event["time"])
            if requested is not None and blue_routes is None and re.search(
                    r": routes generation \d+: production blue 100", message):
                blue_routes = log_time(event["time"])
        return {"requested_at": requested, "blue_routes_at": blue_routes}

    # 2. Controller failover.

    def failover(self):
        hooks = f"""  lifecycleHooks:
    - stages: [POST_SCALE_UP]
      http: {{url: "http://127.0.0.1:{self.hook.port}/hook", timeout: 5s}}
      callBackDelay: 1s
    - stages: [POST_TEST_TRAFFIC_SHIFT]
      http: {{url: "http://127.0.0.1:{self.hook.port}/hook", timeout: 5s}}
      callBackDelay: 1s
      timeoutInMinutes: 60
    - stages: [POST_PRODUCTION_TRAFFIC_SHIFT]
      http: {{url: "http://127.0.0.1:{self.hook.port}/hook", timeout: 5s}}
      callBackDelay: 1s
"""
        self.wait_serving()
        self.hook.hold.set()
        # The circuit breaker is off for this deployment, as when the figures in Docs/BENCHMARKS.md
        # were measured: replacements are not spread back over the nodes, so a later kill could
        # take 2 of the 3 green tasks below the breaker's floor, which then rolled the deployment
        # back. Green short of tasks now holds the deployment for up to healthFloorGrace instead
        # (Docs/DEPLOYMENTS.md); turning the breaker on here needs a new measurement.
        breaker = "  circuitBreaker: {enable: false}\n"
        view = self.deploy(self.spec(bake="1s", extra=breaker, hooks=hooks))
        identifier = view["id"]
        trials = []
        self.results["failover_trials_so_far"] = trials  # kept when the run fails later
        for trial in range(self.args.failover_trials):
            try:
                trials.append(self.failover_trial(identifier, trial))
            except BenchError as error:
                # Recorded and reported; the run goes on with every node up again, unless the
                # deployment ended.
                log(f"failover {trial + 1} failed: {error}")
                trials.append({"error": str(error)})
                if self.deployment(identifier)["status"] != "IN_PROGRESS":
                    raise
                self.up()
                self.wait_all_up()
                self.wait_deployment_healthy(identifier)
        self.hook.hold.clear()
        final = self.wait_deployment(identifier, lambda v: v["status"] == "SUCCESSFUL", "SUCCESSFUL", timeout=180)
        executions = {}
        for execution in final["hooks"]:
            executions.setdefault(execution["executionId"], []).append(execution)
        called = {c["executionId"] for c in self.hook.calls if c["executionId"] and identifier in c["executionId"]}
        check = {
            "executions": len(executions),
            "executions_called": len(called),
            "each_exactly_one_final_result": all(
                len(entries) == 1 and entries[0].get("result") for entries in executions.values()),
            "called_but_not_listed": sorted(called - set(executions)),
            "hooks": final["hooks"],
            "final_status": final["status"],
        }
        log(f"failover: {identifier} {final['status']}; {len(executions)} hook executions, "
            f"exactly one final result each: {check['each_exactly_one_final_result']}")
        return {"deployment": identifier, "trials": trials, "hook_check": check}

    def wait_hook_cadence(self, term, calls=2, timeout=60):
        """Until the hook got `calls` calls of `term` (the controller of that term runs)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(1 for c in self.hook.calls if c["term"] == term and c["answer"] == "IN_PROGRESS") >= calls:
                return
            time.sleep(0.1)
        raise BenchError(f"the hook got fewer than {calls} IN_PROGRESS calls of term {term} within {timeout} s")

    def failover_trial(self, identifier, trial):
        leader, term = self.leader()
        self.wait_hook_cadence(term, calls=1 if trial else 2)
        # Kill at a varied point of the ~1 s hook cadence.
        last_call = max(c["at"] for c in self.hook.calls if c["term"] == term)
        target = last_call + 0.1 + 0.8 * ((trial * 0.37) % 1.0)
        while time.monotonic() < target:
            time.sleep(0.005)
        index = int(leader[1:])
        with open(os.path.join(self.dir, leader, "node.pid")) as file:
            pid = int(file.read().strip())
        survivors = [h for h in self.hosts if h != f"127.0.0.{index}"]
        leftovers = {t["id"] for t in self.api.call("GET", f"/v1/tasks?service={SERVICE}&node={leader}")["tasks"]}
        calls_before = len(self.hook.calls)
        records_before, errors_before = self.clients.mark()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # With the leader dead nothing can commit until a new one does: the survivors' commit
        # indexes read now are the kill-time ones.
        frozen = 0
        for host in survivors:
            try:
                frozen = max(frozen, self.cluster(host)["commitIndex"])
            except (BenchError, ConnectionError, OSError, http.client.HTTPException):
                pass
        elected = committed = new_leader = new_term = None
        end = killed + 30
        while committed is None and time.monotonic() < end:
            for host in survivors:
                try:
                    view = self.cluster(host)
                except (BenchError, ConnectionError, OSError, http.client.HTTPException):
                    continue
                me = next((m for m in view.get("members", []) if f"//{host}:" in m.get("api", "")), None)
                if view["term"] > term and me and me.get("role") == "leader":
                    if elected is None:
                        elected = time.monotonic()
                    if view["commitIndex"] > frozen:
                        committed = time.monotonic()
                        new_leader, new_term = me["id"], view["term"]
                        break
            time.sleep(0.01)
        hook_call = None
        while hook_call is None and time.monotonic() < end:
            later = [c for c in self.hook.calls[calls_before:] if c["term"] > term]
            if later:
                hook_call = later[0]
                break
            time.sleep(0.02)
        stale = [c for c in self.hook.calls[calls_before:] if c["term"] <= term]
        if committed is None or hook_call is None:
            status = self.deployment(identifier)
            raise BenchError(f"failover trial {trial + 1}: killed {leader} (term {term}); within 30 s "
                             f"new leader commit: {committed is not None}, hook call of a higher term: "
                             f"{hook_call is not None}; deployment {status['status']} ({status.get('reason')})")
        survivor_errors = [e for e in self.clients.errors[errors_before:] if e[1] in survivors]
        survivor_answers = [r for r in self.clients.records[records_before:] if r[2] in survivors]
        survivor_failures = sum(1 for r in survivor_answers if r[5] != 200)
        result = {
            "survivor_requests": len(survivor_answers), "survivor_errors": len(survivor_errors),
            "survivor_non_200": survivor_failures,
            "survivor_error_samples": [f"{e[1]}: {e[2]}" for e in survivor_errors[:3]],
            "killed": leader, "old_term": term, "new_leader": new_leader, "new_term": new_term,
            "kill_to_leader_ms": (elected - killed) * 1000,
            "kill_to_commit_ms": (committed - killed) * 1000,
            "kill_to_hook_ms": (hook_call["at"] - killed) * 1000,
            "kill_after_last_hook_call_ms": (killed - last_call) * 1000,
            "hook_term": hook_call["term"], "hook_attempt": hook_call["attempt"],
            "old_term_calls_after_kill": len(stale),
        }
        log(f"failover {trial + 1}: killed {leader} (term {term}) {result['kill_after_last_hook_call_ms']:.0f} ms "
            f"after a hook call; {new_leader} committed in term {new_term} after {result['kill_to_commit_ms']:.0f} ms; "
            f"first hook call of term {hook_call['term']} after {result['kill_to_hook_ms']:.0f} ms; "
            f"survivors' listeners: {len(survivor_answers)} answers, {survivor_failures} not 200, "
            f"{len(survivor_errors)} errors")
        self.restart(f"127.0.0.{index}", killed)
        self.wait_deployment_healthy(identifier, replaced=leftovers)
        return result

    def restart(self, host, killed):
        """`teal cluster up` restarts the killed node; then until its listener answers again."""
        self.up()
        self.wait_all_up()
        restarted = time.monotonic()
        end = restarted + 60
        while not any(r[2] == host and r[5] == 200 and r[0] > restarted for r in self.clients.records[-2000:]):
            if time.monotonic() > end:
                raise BenchError(f"the listener of {host} does not answer 60 s after its node restarted")
            time.sleep(0.05)
        self.downtimes.append((host, killed, time.monotonic()))

    def wait_deployment_healthy(self, identifier, replaced=(), timeout=120):
        """Until the tasks in `replaced` are gone and blue and green each have 3 healthy tasks again:
        a restarted node drains and stops the tasks its previous process left running and the
        cluster replaces them (TaskReconciler), and a next kill before that would take the
        deployment below the circuit breaker's floor."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            tasks = self.api.call("GET", f"/v1/tasks?service={SERVICE}")["tasks"]
            if any(t["id"] in replaced and t["desired"] == "running" for t in tasks):
                time.sleep(0.2)
                continue
            view = self.deployment(identifier)
            if view["status"] != "IN_PROGRESS":
                raise BenchError(f"deployment {identifier} is {view['status']}: {view.get('reason')}")
            healthy = {}
            for count in view.get("tasks", []):
                healthy[count["revision"]] = healthy.get(count["revision"], 0) + count["healthy"]
            if healthy.get(view["blue"], 0) >= 3 and healthy.get(view["green"], 0) >= 3:
                return
            time.sleep(0.2)
        raise BenchError(f"deployment {identifier}: blue and green not both at 3 healthy tasks within {timeout} s")

    def wait_all_up(self, timeout=90):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                view = self.api.call("GET", "/v1/cluster")
                members = view.get("members", [])
                if len(members) == NODES and all(m["state"] == "up" for m in members) and \
                        sum(1 for m in members if m["role"] == "leader") == 1:
                    return
            except BenchError:
                pass
            time.sleep(0.2)
        raise BenchError(f"not every node up within {timeout} s")

    # 3. Weight convergence.

    def convergence(self):
        self.wait_serving()
        linear = f"  linear: {{stepPercent: {self.args.linear_step}, stepBakeTime: {self.args.linear_step_bake}}}\n"
        view = self.deploy(self.spec(strategy="LINEAR", bake="1s", extra=linear))
        identifier = view["id"]
        final = self.wait_deployment(identifier, lambda v: v["status"] == "SUCCESSFUL", "SUCCESSFUL", timeout=300)
        pairs = self.generation_pairs()
        mine = [p for p in pairs if p["deployment"] == identifier]
        log(f"convergence: {identifier} {final['status']}; {len(mine)} generations paired "
            f"({len(pairs)} over every deployment of the run)")
        return {"deployment": identifier, "pairs": mine, "all_pairs": pairs}

    def generation_pairs(self):
        proposed, pairs = {}, []
        for event in self.events():
            match = re.match(r"deployment (\S+): routes generation (\d+): (.*)", event["message"])
            if match:
                proposed[(match[1], int(match[2]))] = (log_time(event["time"]), match[3], event["index"])
                continue
            match = re.match(r"deployment (\S+): converged: every live node applies routes generation (\d+)",
                             event["message"])
            if match and (match[1], int(match[2])) in proposed:
                at, weights, index = proposed[(match[1], int(match[2]))]
                pairs.append({"deployment": match[1], "generation": int(match[2]), "weights": weights,
                              "ms": (log_time(event["time"]) - at) * 1000,
                              "entries": event["index"] - index})
        return pairs

    # The run.

    def run(self):
        self.results["load_before"] = uptime()
        self.results["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.results["settings"] = {k: v for k, v in vars(self.args).items() if k not in ("json",)}
        self.results["dir"] = self.dir
        log(f"load before: {self.results['load_before']}")
        log(f"cluster in {self.dir}")
        self.up()
        with open(os.path.join(self.dir, "token")) as file:
            token = file.read().strip()
        self.api = API(self.hosts, self.args.api_port, token)
        self.hook = Hook()
        self.clients = Clients(self.hosts, self.args.production_port, self.args.clients_per_node,
                               self.args.poll_interval_ms / 1000)
        self.clients.start()
        self.create_service()
        log("service demo serving on every listener")
        # Traffic counts from here (before, the listeners were not there yet or had no targets).
        self.traffic_from = self.clients.mark()
        only = set(self.args.only.split(",")) if self.args.only else {"rollback", "failover", "convergence"}
        if "rollback" in only:
            trials = self.results["rollback_trials_so_far"] = []
            for trial in range(self.args.rollback_trials):
                trials.append(self.rollback_trial(trial))
            self.results["rollback"] = {
                "trials": trials,
                "from_answer": summary([t["from_answer_ms"] for t in trials]),
                "from_sent": summary([t["from_sent_ms"] for t in trials]),
                "from_answer_lower_bound": summary([t["from_answer_lower_ms"] for t in trials]),
                "post": summary([t["post_ms"] for t in trials]),
                "log_request_to_blue_routes": summary(
                    [t["log_requested_to_routes_ms"] for t in trials if "log_requested_to_routes_ms" in t]),
                "client_errors": sum(t["errors"] for t in trials),
                "resolution": summary([t["resolution_ms"] for t in trials if t["resolution_ms"] is not None]),
            }
        if "failover" in only:
            failover = self.failover()
            failover["kill_to_leader"] = summary([t["kill_to_leader_ms"] for t in failover["trials"] if "error" not in t])
            failover["kill_to_commit"] = summary([t["kill_to_commit_ms"] for t in failover["trials"] if "error" not in t])
            failover["kill_to_hook"] = summary([t["kill_to_hook_ms"] for t in failover["trials"] if "error" not in t])
            self.results["failover"] = failover
        if "convergence" in only:
            convergence = self.convergence()
            convergence["linear"] = summary([p["ms"] for p in convergence["pairs"]])
            convergence["every_deployment"] = summary([p["ms"] for p in convergence["all_pairs"]])
            self.results["convergence"] = convergence
        self.results["traffic"] = self.traffic_summary()

    def traffic_summary(self):
        """Answers and errors since the service served, apart: those of a killed node's listener
        from the kill until it answered again after its restart."""
        records_from, errors_from = getattr(self, "traffic_from", (0, 0))
        records, errors = self.clients.records[records_from:], self.clients.errors[errors_from:]

        def down(host, at):
            return any(host == h and start <= at <= stop for h, start, stop in self.downtimes)

        start = records[0][0] if records else 0
        failing = {}
        for sent, _, host, revision, generation, status in records:
            if status != 200:
                key = f"{host} {status}" + (" (killed node, down)" if down(host, sent) else "")
                entry = failing.setdefault(key, {"count": 0, "first_s": round(sent - start, 2)})
                entry["count"] += 1
                entry["last_s"] = round(sent - start, 2)
        expected = [e for e in errors if down(e[1], e[0])]
        others = [e for e in errors if not down(e[1], e[0])]
        return {
            "requests": len(records),
            "non_200": sum(1 for r in records if r[5] != 200),
            "non_200_outside_downtime": sum(1 for r in records if r[5] != 200 and not down(r[2], r[0])),
            "non_200_by_listener": failing,
            "errors_at_killed_listeners": len(expected), "other_errors": len(others),
            "other_error_samples": [f"{e[1]} at {e[0] - start:.2f} s: {e[2]}" for e in others[:5]]}

    def report(self):
        r = self.results
        lines = ["", "== Teal deployments benchmark ==",
                 f"started {r.get('started')}; cluster dir {r.get('dir')}",
                 f"load before: {r.get('load_before')}", f"load after:  {r.get('load_after')}"]
        if "rollback" in r:
            rb = r["rollback"]
            lines += ["rollback latency (every listener only blue):",
                      f"  from the POST's answer:  {fmt(rb['from_answer'])}",
                      f"  from the POST's sending: {fmt(rb['from_sent'])}",
                      f"  (lower bound, last green request's sending - answer: {fmt(rb['from_answer_lower_bound'])})",
                      f"  the POST itself: {fmt(rb['post'])}",
                      f"  log time, rollback requested -> blue routes proposed: {fmt(rb['log_request_to_blue_routes'])}",
                      f"  client errors during the trials: {rb['client_errors']}; median time between two "
                      f"answers of one listener: {fmt(rb['resolution'])}"]
        if "failover" in r:
            fo = r["failover"]
            check = fo["hook_check"]
            lines += ["controller failover (kill -9 of the leader):",
                      f"  kill -> a survivor leads a higher term: {fmt(fo['kill_to_leader'])}",
                      f"  kill -> first entry committed by the new leader: {fmt(fo['kill_to_commit'])}",
                      f"  kill -> first hook call with a higher x-teal-term: {fmt(fo['kill_to_hook'])}",
                      "    (includes the hook's callBackDelay cadence: the new leader calls once the 1 s since the "
                      "last answer passed)",
                      f"  hook executions {check['executions']}, exactly one final result each: "
                      f"{check['each_exactly_one_final_result']}; deployment {check['final_status']}",
                      f"  calls with the old term after a kill: "
                      f"{sum(t.get('old_term_calls_after_kill', 0) for t in fo['trials'])}; failed trials: "
                      f"{sum(1 for t in fo['trials'] if 'error' in t)}",
                      f"  surviving listeners from the kill to the new commit and hook call: "
                      f"{sum(t.get('survivor_requests', 0) for t in fo['trials'])} answers, "
                      f"{sum(t.get('survivor_non_200', 0) for t in fo['trials'])} not 200, "
                      f"{sum(t.get('survivor_errors', 0) for t in fo['trials'])} errors"]
        if "convergence" in r:
            cv = r["convergence"]
            lines += ["weight convergence (routes generation proposed -> every live node applied, log times):",
                      f"  LINEAR deployment {cv['deployment']}: {fmt(cv['linear'])}",
                      f"  every deployment of the run: {fmt(cv['every_deployment'])}"]
        if "traffic" in r:
            t = r["traffic"]
            lines += [f"traffic since the service served: {t['requests']} answers, {t['non_200']} not 200 "
                      f"({t['non_200_outside_downtime']} outside a killed node's downtime) {t['non_200_by_listener']}",
                      f"  connection errors: {t['errors_at_killed_listeners']} at a killed node's listener while "
                      f"it was down, {t['other_errors']} elsewhere {t['other_error_samples']}"]
        if "error" in r:
            lines += [f"FAILED: {r['error']}"]
        print("\n".join(lines), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teal", default=os.environ.get("TEAL"), help="the teal executable")
    parser.add_argument("--demo", default=os.environ.get("TEAL_DEMO"), help="the teal-demo executable")
    parser.add_argument("--dir", help="a new cluster directory (default: a temporary one); purged at the end")
    parser.add_argument("--rollback-trials", type=int, default=5, help="default 5")
    parser.add_argument("--failover-trials", type=int, default=5, help="default 5")
    parser.add_argument("--linear-step", default="10", help="LINEAR stepPercent (default 10)")
    parser.add_argument("--linear-step-bake", default="1s", help="LINEAR stepBakeTime (default 1s)")
    parser.add_argument("--clients-per-node", type=int, default=4, help="keep-alive connections per listener")
    parser.add_argument("--poll-interval-ms", type=float, default=5, help="pause between a connection's requests")
    parser.add_argument("--peer-port", type=int, default=17100)
    parser.add_argument("--api-port", type=int, default=17170)
    parser.add_argument("--production-port", type=int, default=18480)
    parser.add_argument("--test-port", type=int, default=18481)
    parser.add_argument("--election-timeout-ms", type=int, help="the nodes' election timeout (node default: 1000)")
    parser.add_argument("--only", help="comma-separated subset of rollback,failover,convergence")
    parser.add_argument("--json", help="also write every figure and trial to this file")
    parser.add_argument("--logs", help="where to keep the nodes' logs and the event log (default: a new temporary directory)")
    args = parser.parse_args()
    if not args.teal or not args.demo:
        parser.error("give --teal and --demo (or TEAL and TEAL_DEMO); run.sh finds them in the build directory")
    if args.dir and os.path.exists(args.dir) and os.listdir(args.dir):
        parser.error(f"--dir {args.dir} is not empty: give a new directory (it is purged at the end)")
    args.teal, args.demo = os.path.abspath(args.teal), os.path.abspath(args.demo)
    args.logs = args.logs or tempfile.mkdtemp(prefix="teal-bench-logs-")

    execute(Bench(args), args.json)


def execute(bench, json_path):
    """Runs `bench` and exits with its status. Ctrl-C and SIGTERM end the run through `finally`,
    which always takes the cluster down, reports, and writes the figures to `json_path` if given.
    A command that outlives its timeout (`subprocess.TimeoutExpired`) fails the run like a BenchError."""
    def interrupted(*_):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupted)
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.results["error"] = "interrupted"
        status = 130
    except (BenchError, subprocess.TimeoutExpired) as error:
        bench.results["error"] = str(error)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if bench.clients:
            bench.clients.stop()
            if "traffic" not in bench.results:
                bench.results["traffic"] = bench.traffic_summary()
        if bench.hook:
            bench.hook.close()
        try:
            bench.save_logs()
        except OSError as error:
            log(f"logs not saved: {error}")
        log("teal cluster down --purge")
        bench.down()
        bench.results["load_after"] = uptime()
        bench.report()
        if json_path:
            with open(json_path, "w") as file:
                json.dump(bench.results, file, indent=2, default=str)
    sys.exit(status)


if __name__ == "__main__":
    main()
