"""Client overhead: ChefClient against raw signed requests, in one run.

Starts a local goiardi, then measures GET and PUT of one role:

* latency: sequential calls, raw and client interleaved call by call, so
  both see the same machine load; median and p95;
* throughput: N threads for a few seconds each, raw and client alternating.

The raw path is the least a Python program can do: one ``requests.Session``,
the same signer, a pre-encoded JSON body, ``response.json()``. The client path
adds retries, error mapping, counters and URL building. Target: the client's
medians within 10% of raw (ratio <= 1.10).

    python bench/chef_roundtrip.py [--calls 2000] [--threads 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter

from barclamp_sdk.local import LocalChefServer

ROLE = {"name": "bench-role", "json_class": "Chef::Role", "chef_type": "role",
        "default_attributes": {"crowbar": {"state": "ready", "allocated": True,
                                           "run_list_map": {"nova-multi-compute": {"priority": 97}}}},
        "override_attributes": {}, "run_list": ["role[nova-multi-compute]"], "description": "bench"}


class RawSigned:
    """The floor: signed requests on one pooled Session, nothing else."""

    def __init__(self, server: LocalChefServer, signer: Any, pool: int) -> None:
        self.base = server.url
        self.signer = signer
        self.session = requests.Session()
        self.session.trust_env = False  # no per-request environment scan: the least requests can do
        self.session.mount("http://", HTTPAdapter(pool_maxsize=pool, max_retries=0))
        self.session.headers.update({"Accept": "application/json", "Content-Type": "application/json",
                                     "X-Chef-Version": "12.22.5"})

    def call(self, method: str, path: str, body: bytes = b"") -> Any:
        headers = self.signer.headers_for(method, path, body)
        response = self.session.request(method, self.base + path, data=body or None, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(response.text)
        return response.json()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def latency(calls: int, raw_fn: Callable[[], Any], client_fn: Callable[[], Any]) -> dict[str, Any]:
    raw_times: list[float] = []
    client_times: list[float] = []
    for index in range(calls):
        order = (raw_fn, client_fn) if index % 2 else (client_fn, raw_fn)
        for fn in order:
            started = time.perf_counter()
            fn()
            elapsed = (time.perf_counter() - started) * 1000
            (raw_times if fn is raw_fn else client_times).append(elapsed)
    raw_median, client_median = statistics.median(raw_times), statistics.median(client_times)
    return {
        "raw_median_ms": round(raw_median, 3), "raw_p95_ms": round(percentile(raw_times, 0.95), 3),
        "client_median_ms": round(client_median, 3), "client_p95_ms": round(percentile(client_times, 0.95), 3),
        "ratio": round(client_median / raw_median, 3),
    }


def throughput(threads: int, seconds: float, fn: Callable[[], Any]) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def worker(slot: int) -> None:
        while time.monotonic() < stop:
            fn()
            counts[slot] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per side")
    parser.add_argument("--memory", action="store_true", help="goiardi's in-memory store instead of PostgreSQL")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "chef_roundtrip.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        client = server.client(max_connections=args.threads)
        raw = RawSigned(server, client.signer, args.threads)
        client.roles.create(ROLE)
        body = json.dumps(ROLE, separators=(",", ":")).encode()
        path = "/roles/bench-role"
        cases = {
            "GET": (lambda: raw.call("GET", path), lambda: client.roles.get("bench-role")),
            "PUT": (lambda: raw.call("PUT", path, body), lambda: client.roles.update("bench-role", ROLE)),
        }
        for raw_fn, client_fn in cases.values():  # warm up connections and caches
            for _ in range(50):
                raw_fn(), client_fn()
        results: dict[str, Any] = {"latency": {}, "throughput": {}}
        for name, (raw_fn, client_fn) in cases.items():
            results["latency"][name] = latency(args.calls, raw_fn, client_fn)
        for name, (raw_fn, client_fn) in cases.items():
            raw_rates, client_rates = [], []
            for _ in range(args.rounds):
                raw_rates.append(throughput(args.threads, args.seconds, raw_fn))
                client_rates.append(throughput(args.threads, args.seconds, client_fn))
            raw_rate, client_rate = statistics.median(raw_rates), statistics.median(client_rates)
            results["throughput"][name] = {
                "threads": args.threads, "raw_per_s": round(raw_rate, 1),
                "client_per_s": round(client_rate, 1), "ratio": round(raw_rate / client_rate, 3),
            }
    results["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": __import__("os").cpu_count()}
    results["command"] = " ".join(["python", "bench/chef_roundtrip.py", *sys.argv[1:]])
    worst = max([v["ratio"] for v in results["latency"].values()]
                + [v["ratio"] for v in results["throughput"].values()])
    results["worst_ratio"] = worst
    results["target_met"] = worst <= 1.10
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'':6} {'raw median':>11} {'client median':>14} {'ratio':>6}   "
          f"{'raw req/s':>10} {'client req/s':>13} {'ratio':>6}")
    for name in cases:
        lat, thr = results["latency"][name], results["throughput"][name]
        print(f"{name:6} {lat['raw_median_ms']:>9.3f}ms {lat['client_median_ms']:>12.3f}ms "
              f"{lat['ratio']:>6.3f}   {thr['raw_per_s']:>10.1f} {thr['client_per_s']:>13.1f} {thr['ratio']:>6.3f}")
    print(f"worst ratio {worst:.3f} (target <= 1.10): {'met' if results['target_met'] else 'NOT met'}")
    print(f"results written to {args.output}")
    return 0 if results["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
