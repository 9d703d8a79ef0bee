#!/usr/bin/env python3
"""A local 3-node Teal cluster holding many services and deployments: memory, commit cost, restart.

Starts a cluster with the built `teal` (`teal cluster up --dir TMP`) and measures:

1. idle: every node's resident memory (VmRSS, VmHWM), threads and open files with no service;
2. services: creates N services (default 1,000), each one task of Benchmarks/scale/tiny-task.c
   (1.5 MB resident, so the figures are the node's, not the tasks'), two listeners on every node;
   figures: the create latency (client's, through the leader and through the followers), the time
   until every service has its task healthy, then memory, threads, open files, data dir size and
   the latency of GET /v1/services;
3. deployments: starts D deployments (default 100) of a new revision with a long bake, waits until
   every one is in BAKE_TIME with its green task healthy (D more tasks), then memory again;
4. restart of one node: kill -9 of a follower, `teal cluster up`; the time until it is a member
   again and until it applied what the leader had committed; its memory after;
5. restart of every node: `teal cluster down` then `teal cluster up` on the same dir; the time to
   stop, to ready and until every service is healthy; what became of the deployments; memory.

Only the Python 3 standard library; reuses the API client and cluster handling of
Benchmarks/deployments/bench.py. Not run in CI. `teal cluster down --purge` always runs at the end,
also on Ctrl-C. Method and figures: Docs/BENCHMARKS.md ("A node holding 1,000 services").
"""

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deployments"))
from bench import API, Bench, BenchError, execute, fmt, log, summary, uptime  # noqa: E402

NODES = 3


def node_figures(directory):
    """Per node: pid, VmRSS and VmHWM in MB, threads, open files."""
    figures = {}
    for index in range(1, NODES + 1):
        node = f"n{index}"
        try:
            with open(os.path.join(directory, node, "node.pid")) as file:
                pid = int(file.read().split()[0])
            status = {}
            with open(f"/proc/{pid}/status") as file:
                for line in file:
                    key, _, value = line.partition(":")
                    status[key] = value.strip()
            figures[node] = {
                "pid": pid,
                "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
                "hwm_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1),
                "threads": int(status["Threads"]),
                "open_files": len(os.listdir(f"/proc/{pid}/fd")),
            }
        except (OSError, ValueError, KeyError) as error:
            figures[node] = {"error": str(error)}
    return figures


def directory_size(path):
    """(bytes of every file under path, bytes of its newest snapshot file or 0)."""
    total, snapshot = 0, (0.0, 0)
    for root, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.stat(os.path.join(root, name))
            except OSError:
                continue
            total += stat.st_size
            if name.endswith(".snap") and stat.st_mtime > snapshot[0]:
                snapshot = (stat.st_mtime, stat.st_size)
    return total, snapshot[1]


class Scale(Bench):
    def __init__(self, args):
        super().__init__(args)
        self.names = [f"s{index:04d}" for index in range(args.services)]

    def spec(self, name, index, version="1"):
        port = self.args.base_port + 2 * index
        return f"""name: {name}
desiredCount: 1
productionPort: {port}
testPort: {port + 1}
task:
  command: {json.dumps(self.args.task)}
  env:
    VERSION: "{version}"
  healthCheck:
    path: /health
    interval: {self.args.health_interval}
    timeout: 1s
    healthyThreshold: 1
    unhealthyThreshold: 3
deployment:
  strategy: BLUE_GREEN
  bakeTime: 2h
  abortScaleDownDelay: 0s
"""

    def timed_calls(self, calls):
        """Runs (host, method, path, body) calls on `workers` threads; returns the latencies in ms."""
        def one(call):
            host, method, path, body = call
            started = time.monotonic()
            self.api.call(method, path, body=body.encode(), content_type="application/yaml",
                          hosts=[host] + [h for h in self.hosts if h != host], deadline=120)
            return host, (time.monotonic() - started) * 1000

        with concurrent.futures.ThreadPoolExecutor(self.args.workers) as pool:
            return list(pool.map(one, calls))

    def services_view(self):
        started = time.monotonic()
        services = self.api.call("GET", "/v1/services", deadline=30)["services"]
        return services, (time.monotonic() - started) * 1000

    def wait_until(self, what, condition, timeout):
        started = time.monotonic()
        last = None
        while time.monotonic() - started < timeout:
            done, last = condition()
            if done:
                return time.monotonic() - started
            time.sleep(0.5)
        raise BenchError(f"{what}: not within {timeout} s (last: {last})")

    def all_healthy(self):
        services, _ = self.services_view()
        mine = [s for s in services if s["name"] in set(self.names)]
        healthy = sum(1 for s in mine if s["healthyCount"] >= s["desiredCount"])
        return healthy == len(self.names), f"{healthy}/{len(self.names)} services healthy"

    def deployments_baking(self, names):
        listing = self.api.call("GET", "/v1/deployments", deadline=30)["deployments"]
        baking = {d["service"] for d in listing if d.get("stage") == "BAKE_TIME" and d["status"] == "IN_PROGRESS"}
        count = sum(1 for n in names if n in baking)
        return count == len(names), f"{count}/{len(names)} deployments in BAKE_TIME"

    def snapshot(self, label):
        figures = node_figures(self.dir)
        sizes = {f"n{i}": directory_size(os.path.join(self.dir, f"n{i}", "data")) for i in range(1, NODES + 1)}
        self.results.setdefault("memory", {})[label] = {"nodes": figures, "data_bytes": sizes, "load": uptime()}
        rss = ", ".join(f"{n} {f.get('rss_mb')} MB (peak {f.get('hwm_mb')}, {f.get('threads')} threads, "
                        f"{f.get('open_files')} files)" for n, f in figures.items())
        log(f"{label}: {rss}; data {', '.join(f'{n} {t / 1e6:.1f} MB (snapshot {s / 1e6:.2f} MB)' for n, (t, s) in sizes.items())}")

    def run(self):
        self.results["load_before"] = uptime()
        self.results["settings"] = {k: v for k, v in vars(self.args).items()}
        log(f"load before: {self.results['load_before']}; cluster in {self.dir}")
        started = time.monotonic()
        self.up()
        self.results["up_s"] = round(time.monotonic() - started, 2)
        with open(os.path.join(self.dir, "token")) as file:
            self.api = API(self.hosts, self.args.api_port, file.read().strip())
        time.sleep(self.args.settle)  # idle memory is read after start-up's allocations settle
        self.snapshot("idle")

        leader, _ = self.leader()
        leader_host = self.hosts[int(leader[1:]) - 1]
        calls = [(self.hosts[i % NODES], "POST", "/v1/services", self.spec(name, i)) for i, name in enumerate(self.names)]
        started = time.monotonic()
        latencies = self.timed_calls(calls)
        created = time.monotonic() - started
        self.results["create"] = {
            "seconds": round(created, 2), "per_second": round(len(calls) / created, 1),
            "through_leader": summary([ms for host, ms in latencies if host == leader_host]),
            "through_followers": summary([ms for host, ms in latencies if host != leader_host]),
            # Creates of the last tenth, when the state already holds 90 % of the services.
            "last_tenth": summary([ms for _, ms in latencies[-max(1, len(latencies) // 10):]]),
            "first_tenth": summary([ms for _, ms in latencies[:max(1, len(latencies) // 10)]]),
        }
        log(f"created {len(calls)} services in {created:.1f} s; leader {fmt(self.results['create']['through_leader'])}, "
            f"followers {fmt(self.results['create']['through_followers'])}")
        self.results["all_healthy_after_create_s"] = round(
            self.wait_until("every service healthy", self.all_healthy, self.args.timeout), 2)
        log(f"every service healthy {self.results['all_healthy_after_create_s']} s after the last create")
        time.sleep(self.args.settle)
        self.snapshot("services")
        self.results["list_services_ms"] = summary([self.services_view()[1] for _ in range(20)])

        deployed = self.names[: self.args.deployments]
        calls = [(self.hosts[i % NODES], "POST", f"/v1/services/{name}/deployments", self.spec(name, i, "2"))
                 for i, name in enumerate(deployed)]
        started = time.monotonic()
        self.results["deploy_submit"] = summary([ms for _, ms in self.timed_calls(calls)])
        self.results["deployments_baking_s"] = round(self.wait_until(
            "every deployment in BAKE_TIME", lambda: self.deployments_baking(deployed), self.args.timeout)
            + 0, 2)
        log(f"{len(deployed)} deployments in BAKE_TIME {time.monotonic() - started:.1f} s after the first submit")
        time.sleep(self.args.settle)
        self.snapshot("services_and_deployments")

        self.restart_one()
        self.restart_all()

    def applied_index(self, host):
        status, _, parsed = self.api.once(host, "GET", "/v1/cluster/state?stale=true")
        if status != 200:
            raise BenchError(f"/v1/cluster/state on {host}: {status} {parsed}")
        return parsed["appliedIndex"]

    def restart_one(self):
        """kill -9 of a follower (its tasks keep running), then `teal cluster up` starts it again:
        the time until `up` returns (the node is a member again) and until it applied what the
        leader had committed when it was killed."""
        leader, _ = self.leader()
        victim = next(f"n{i}" for i in range(1, NODES + 1) if f"n{i}" != leader)
        host = self.hosts[int(victim[1:]) - 1]
        leader_host = self.hosts[int(leader[1:]) - 1]
        with open(os.path.join(self.dir, victim, "node.pid")) as file:
            pid = int(file.read().split()[0])
        os.kill(pid, signal.SIGKILL)
        self.wait_until(f"{victim} exited", lambda: (self.start_time(pid) is None, pid), 30)
        target = self.api.call("GET", "/v1/cluster", hosts=[leader_host])["commitIndex"]
        started = time.monotonic()
        self.up()
        up = time.monotonic() - started

        def caught_up():
            try:
                applied = self.applied_index(host)
            except (BenchError, ConnectionError, OSError) as error:
                return False, str(error)
            return applied >= target, f"applied {applied} of {target}"

        caught = up + self.wait_until(f"{victim} caught up", caught_up, self.args.timeout)
        self.results["restart_one"] = {"node": victim, "up_s": round(up, 2), "caught_up_s": round(caught, 2),
                                       "commit_index": target}
        log(f"restart of {victim} after kill -9: member again {up:.2f} s, applied index {target} {caught:.2f} s "
            f"after `up` began")
        time.sleep(self.args.settle)
        self.snapshot("after_restart_one")

    def restart_all(self):
        """`teal cluster down` (every node drains and stops its tasks) then `teal cluster up`: the
        times to stop, to ready and until every service is healthy; what became of the deployments
        (a green task set whose every task stopped trips the health floor: Docs/DEPLOYMENTS.md)."""
        started = time.monotonic()
        self.teal("cluster", "down", "--dir", self.dir, timeout=300)
        self.results["down_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        self.up()
        self.results["restart_up_s"] = round(time.monotonic() - started, 2)
        self.results["restart_all_healthy_s"] = round(
            self.results["restart_up_s"] + self.wait_until("every service healthy after the restart",
                                                           self.all_healthy, self.args.timeout), 2)
        listing = self.api.call("GET", "/v1/deployments", deadline=30)["deployments"]
        outcome = {}
        for deployment in listing:
            if deployment["service"] in set(self.names[: self.args.deployments]) and deployment["green"].endswith(":2"):
                outcome[deployment["status"]] = outcome.get(deployment["status"], 0) + 1
        self.results["deployments_after_restart_all"] = outcome
        log(f"restart of every node: down {self.results['down_s']} s, up {self.results['restart_up_s']} s, every "
            f"service healthy {self.results['restart_all_healthy_s']} s after `up` began; deployments: {outcome}")
        time.sleep(self.args.settle)
        self.snapshot("after_restart_all")

    def report(self):
        r = self.results
        lines = ["", "== Teal scale benchmark ==", f"load before: {r.get('load_before')}",
                 f"load after:  {r.get('load_after')}", f"cluster up: {r.get('up_s')} s"]
        for label, figures in r.get("memory", {}).items():
            nodes = figures["nodes"]
            lines.append(f"{label}: " + ", ".join(
                f"{n} {f.get('rss_mb')} MB (peak {f.get('hwm_mb')})" for n, f in nodes.items()))
        if "create" in r:
            c = r["create"]
            lines += [f"create {self.args.services} services: {c['seconds']} s ({c['per_second']}/s)",
                      f"  through the leader: {fmt(c['through_leader'])}",
                      f"  through followers:  {fmt(c['through_followers'])}",
                      f"  first tenth: {fmt(c['first_tenth'])}; last tenth: {fmt(c['last_tenth'])}",
                      f"every service healthy: {r.get('all_healthy_after_create_s')} s after the last create",
                      f"GET /v1/services: {fmt(r.get('list_services_ms'))}"]
        if "deploy_submit" in r:
            lines += [f"submit {self.args.deployments} deployments: {fmt(r['deploy_submit'])}; all in BAKE_TIME "
                      f"{r.get('deployments_baking_s')} s after the submits"]
        if "restart_one" in r:
            one = r["restart_one"]
            lines += [f"restart of {one['node']} after kill -9: member again {one['up_s']} s, caught up "
                      f"{one['caught_up_s']} s"]
        if "restart_up_s" in r:
            lines += [f"restart of every node: down {r['down_s']} s, up {r['restart_up_s']} s, every service healthy "
                      f"{r['restart_all_healthy_s']} s after up began; deployments {r.get('deployments_after_restart_all')}"]
        if "error" in r:
            lines.append(f"ERROR: {r['error']}")
        print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teal", default=os.environ.get("TEAL"), help="the teal executable")
    parser.add_argument("--task", default=os.environ.get("TEAL_TINY_TASK"), help="the compiled tiny-task")
    parser.add_argument("--dir", help="a new cluster directory (default: a temporary one); purged at the end")
    parser.add_argument("--services", type=int, default=1000, help="default 1000")
    parser.add_argument("--deployments", type=int, default=100, help="default 100 (at most --services)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent API clients (default 8)")
    parser.add_argument("--health-interval", default="5s", help="the tasks' health check interval (default 5s)")
    parser.add_argument("--settle", type=float, default=10, help="seconds to wait before reading memory (default 10)")
    parser.add_argument("--timeout", type=float, default=600, help="bound of every wait, seconds (default 600)")
    parser.add_argument("--base-port", type=int, default=30000, help="service i listens on base+2i and base+2i+1")
    parser.add_argument("--peer-port", type=int, default=17200)
    parser.add_argument("--api-port", type=int, default=17270)
    parser.add_argument("--election-timeout-ms", type=int, help="the nodes' election timeout (node default: 1000)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--logs", help="where to keep the nodes' logs (default: a new temporary directory)")
    args = parser.parse_args()
    if not args.teal or not args.task:
        parser.error("give --teal and --task (or TEAL and TEAL_TINY_TASK); run.sh builds both")
    if not 1 <= args.services <= 10000 or not 0 <= args.deployments <= args.services:
        parser.error("--services must be 1...10000 and --deployments 0...--services")
    if args.base_port + 2 * args.services > 65535:
        parser.error(f"--base-port {args.base_port} leaves no room for {args.services} services' listeners")
    if args.dir and os.path.exists(args.dir) and os.listdir(args.dir):
        parser.error(f"--dir {args.dir} is not empty: give a new directory (it is purged at the end)")
    args.teal, args.task = os.path.abspath(args.teal), os.path.abspath(args.task)
    args.logs = args.logs or tempfile.mkdtemp(prefix="teal-scale-logs-")

    execute(Scale(args), args.json)


if __name__ == "__main__":
    main()
