"""A boot storm against a local goiardi: N discovered machines allocated, then booted to ready at once.

    python bench/bootstorm.py --machines 1000 [--concurrency 32] [--memory] [--bios]

It starts a fresh goiardi (on PostgreSQL; ``--memory`` in memory), adds N
simulated machines and boots them to ``discovered`` (where they pause), runs
``crowbar machines allocate`` on all of them, then times what ``crowbar sim
boot --all`` does: every machine walks hardware-installing ... ready, one
transition and one simulated chef-client run per state, ``--concurrency``
machines at once. With ``--bios`` a bios proposal is committed first, so the
bios barclamp's transition hook runs on every machine.

Reported, in one run: the storm's time, split into the library's transitions
and the simulated chef-client runs (a node GET and PUT and a role read per
machine and state: work real machines do on their own, against the server);
the floor, the least time raw signed requests (one pooled session, the best
of ``--levels``) take to GET and PUT back a machine role as many times as
there were transitions; the ratios of the storm and of its transitions to the
floor (target: transitions <= 2); requests per transition; lock takeovers
(target 0); the machine's load average. The exit status is 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from barclamp_sdk.api import Crowbar  # noqa: E402
from barclamp_sdk.local import LocalChefServer  # noqa: E402
from barclamp_sdk.model.states import LIFECYCLE  # noqa: E402
from barclamp_sdk.testing.fleet import Fleet  # noqa: E402
from scale import floor  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SECRET = b"bench secret"


def run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        chef = server.client(max_connections=args.concurrency * 2)
        crowbar = Crowbar(chef, secret=SECRET, concurrency=args.concurrency)
        fleet = Fleet(chef, crowbar=crowbar, concurrency=args.concurrency)
        started = time.perf_counter()
        names = fleet.add(count, "compute", clients=False)
        states = fleet.boot(names)
        assert set(states.values()) == {"discovered"}, states
        if args.bios:
            crowbar.proposals.create("bios", "default", settings={"bmc_username": "admin", "bmc_password": "pw"})
            crowbar.proposals.commit("bios", "default")
        crowbar.machines.allocate(names)
        prepared = time.perf_counter() - started
        print(f"N={count}: {count} machines discovered and allocated in {prepared:.1f}s", file=sys.stderr)
        load_before = os.getloadavg()
        before = chef.stats.snapshot()
        takeovers = crowbar.locks.takeovers
        started = time.perf_counter()
        timings: dict[str, float] = {}
        final = fleet.boot(names, timings=timings)
        storm = time.perf_counter() - started
        after = chef.stats.snapshot()
        load_after = os.getloadavg()
        steps = LIFECYCLE.index("ready") - LIFECYCLE.index("discovered")
        transitions = steps * count
        print(f"N={count}: storm {storm:.1f}s ({transitions} transitions)", file=sys.stderr)
        repeats = [n for n in names for _ in range(steps)]
        floor_result = floor(server, repeats, args.levels)
    reached = sum(1 for s in final.values() if s == "ready")
    requests = after["reads"] - before["reads"] + after["writes"] - before["writes"]
    result = {
        "machines": count, "bios": args.bios, "concurrency": args.concurrency,
        "backend": "memory" if args.memory else "postgresql",
        "storm_seconds": round(storm, 2), "ready": reached, "transitions": transitions,
        "transition_seconds": round(timings["transitions"], 2),
        "chef_client_seconds": round(timings["chef-client"], 2),
        "floor": floor_result, "ratio_to_floor": round(storm / floor_result["seconds"], 2),
        "transitions_ratio_to_floor": round(timings["transitions"] / floor_result["seconds"], 2),
        "requests": requests, "requests_per_transition": round(requests / transitions, 1),
        "searches": sum(v for k, v in after["by_endpoint"].items() if "/search" in k)
        - sum(v for k, v in before["by_endpoint"].items() if "/search" in k),
        "takeovers": crowbar.locks.takeovers - takeovers,
        "by_endpoint": {k: v - before["by_endpoint"].get(k, 0) for k, v in sorted(after["by_endpoint"].items())
                        if v != before["by_endpoint"].get(k, 0)},
        "load": {"before": [round(x, 1) for x in load_before], "after": [round(x, 1) for x in load_after]},
        "cpus": os.cpu_count(),
    }
    # The target is on the library's part: the simulated chef-client runs (a node GET and PUT and a
    # role read per machine and state) are work that real machines do on their own.
    result["targets"] = {"all_ready": reached == count, "time": result["transitions_ratio_to_floor"] <= 2,
                         "takeovers": result["takeovers"] == 0}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, action="append", help="N (repeatable); default 1000")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="machines booting at once, and the library's concurrency (the floor's best level)")
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16, 32], help="floor concurrency levels")
    parser.add_argument("--memory", action="store_true", help="goiardi's in-memory store")
    parser.add_argument("--bios", action="store_true", help="commit a bios proposal first (its hook runs)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory for the JSON results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    missed = []
    for count in args.machines or [1000]:
        result = run(count, args)
        result["command"] = "python bench/bootstorm.py " + " ".join(sys.argv[1:])
        (args.results / f"bootstorm-{count}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "floor"} | {"floor_seconds": result["floor"]["seconds"]}))
        missed += [f"N={count}: {name}" for name, ok in result["targets"].items() if not ok]
    print("targets: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
