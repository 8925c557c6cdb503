"""Creating proposals from the inventory at scale: requests, seconds and memory, in one run.

    python bench/create.py --machines 2000 [--machines 20000] [--barclamp swift ...] [--memory]

For each N it starts a fresh goiardi (on PostgreSQL; ``--memory`` in
memory), seeds N ready machines (nine in ten storage servers with 24 data
disks, one in ten compute servers, 64-character FQDNs), waits until search
has indexed every node and role (so the counts do not depend on how far the
index lags), then, for each barclamp (swift, ceph and nova by default),
creates its proposal from the inventory in a fresh process and measures the
requests it sent (by method and path kind), its seconds and the process's
peak memory. After swift's create the same process edits the proposal
(retires one storage machine), diffs the two revisions and shows it.
Each proposal is deleted before the next barclamp's is created.

Results go to ``bench/results/create-N[-memory].json``. The exit status is 1
when a create needs more than 5 requests per 1,000 machines (the target also
asks for under 30 s at 20,000: reported, not gated, as timings vary on shared machines).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from barclamp_sdk.api import Crowbar  # noqa: E402
from barclamp_sdk.chef import ChefClient, ChefConfig  # noqa: E402
from barclamp_sdk.local import LocalChefServer  # noqa: E402
from barclamp_sdk.model.naming import node_role_name  # noqa: E402
from barclamp_sdk.testing import wait_indexed  # noqa: E402
from barclamp_sdk.testing.fleet import PROFILES  # noqa: E402
from bodies import DOMAIN, SETTING, seed as seed_storage  # noqa: E402  (bench/ is the script's directory)
from scale import peak_rss_mb, seed as seed_machines  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SECRET = b"bench secret"
BARCLAMPS = ("swift", "ceph", "nova")
#: Requests per 1,000 machines a create may send.
TARGET_PER_1000 = 5
#: Seconds a create may take at 20,000 machines (reported only).
TARGET_SECONDS = 30


def seed(chef: ChefClient, count: int, concurrency: int) -> list[str]:
    """Nine in ten machines storage servers (24 data disks), the rest compute servers."""
    compute = max(1, count // 10)
    names = seed_storage(chef, count - compute, concurrency)
    names += seed_machines(chef, compute, concurrency, profile=PROFILES["compute"], domain=DOMAIN,
                           names=[f"cp{i:07d}.{DOMAIN}" for i in range(1, compute + 1)], first=count - compute + 1)
    return names


def counted(chef: ChefClient, action: Any) -> tuple[Any, dict[str, Any]]:
    """``action()``, with its requests (by method and path kind) and seconds."""
    before = chef.stats.snapshot()
    started = time.perf_counter()
    outcome = action()
    seconds = time.perf_counter() - started
    after = chef.stats.snapshot()
    kinds = {k: n - before["by_endpoint"].get(k, 0) for k, n in after["by_endpoint"].items()}
    requests = after["reads"] - before["reads"] + after["writes"] - before["writes"]
    return outcome, {"seconds": round(seconds, 3), "requests": requests,
                     "by_kind": {k: n for k, n in sorted(kinds.items()) if n}}


def child(args: argparse.Namespace) -> int:
    """One barclamp's create (and, for swift, edit, diff and show) in its own process."""
    chef = ChefClient(ChefConfig.load().with_options(max_connections=args.concurrency * 2))
    crowbar = Crowbar(chef, secret=SECRET, concurrency=args.concurrency)
    barclamp = args.child
    results: dict[str, Any] = {}
    proposal, results["create"] = counted(chef, lambda: crowbar.proposals.create(barclamp, "default"))
    results["create"]["machines_placed"] = len(proposal.nodes())
    results["create_peak_rss_mb"] = peak_rss_mb()
    if barclamp == "swift":
        retired = proposal.elements["swift-storage"][0]

        def retire(p: Any) -> None:
            p.attributes[SETTING[barclamp]].pop(retired, None)
            p.elements["swift-storage"].remove(retired)

        _, results["edit"] = counted(chef, lambda: crowbar.proposals.update(
            barclamp, "default", retire, change="retire one machine"))
        diff, results["diff"] = counted(chef, lambda: crowbar.proposals.diff(barclamp, "default", 1, 2))
        results["diff"]["changes"] = len(diff.changes)
        results["diff"]["text_lines"] = diff.text.count("\n")
        shown, results["show"] = counted(chef, lambda: crowbar.proposals.get(barclamp, "default"))
        results["show"]["machines"] = len(shown.nodes())
        results["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(results))
    return 0


def run(count: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        chef = server.client(max_connections=args.concurrency * 2)
        started = time.perf_counter()
        names = seed(chef, count, args.concurrency)
        seeded = round(time.perf_counter() - started, 1)
        print(f"N={count}: seeded in {seeded}s", file=sys.stderr)
        started = time.perf_counter()
        wait_indexed(chef, "node", names, timeout=3600)
        wait_indexed(chef, "role", [node_role_name(n) for n in names], timeout=3600)
        print(f"N={count}: indexed {time.perf_counter() - started:.1f}s later", file=sys.stderr)
        env = {**os.environ, **server.environment(), "PYTHONPATH": str(ROOT)}
        crowbar = Crowbar(chef, secret=SECRET, concurrency=args.concurrency)
        steps = {}
        for barclamp in args.barclamp or BARCLAMPS:
            done = subprocess.run([sys.executable, __file__, "--child", barclamp, "--concurrency",
                                   str(args.concurrency)], env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"creating the {barclamp} proposal failed:\n{done.stderr}")
            steps[barclamp] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"N={count} {barclamp}: {json.dumps(steps[barclamp])}", file=sys.stderr)
            crowbar.proposals.delete(barclamp, "default")
    result: dict[str, Any] = {
        "machines": count, "backend": "memory" if args.memory else "postgresql", "seeded_seconds": seeded,
        "cpus": os.cpu_count(), "load": [round(x, 1) for x in os.getloadavg()], "barclamps": steps,
    }
    for barclamp, step in steps.items():
        step["create"]["per_1000"] = round(step["create"]["requests"] / count * 1000, 2)
    result["targets"] = {f"{b}_requests": s["create"]["per_1000"] <= TARGET_PER_1000 for b, s in steps.items()}
    if count >= 20000:
        result["reported"] = {f"{b}_seconds": s["create"]["seconds"] < TARGET_SECONDS for b, s in steps.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, action="append", help="N (repeatable); default 2000")
    parser.add_argument("--barclamp", choices=BARCLAMPS, action="append", help="default: swift, ceph, nova")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="goiardi's in-memory store")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory for the JSON results")
    parser.add_argument("--child", choices=BARCLAMPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.results.mkdir(parents=True, exist_ok=True)
    missed = []
    for count in args.machines or [2000]:
        result = run(count, args)
        result["command"] = "python bench/create.py " + " ".join(sys.argv[1:])
        suffix = "-memory" if args.memory else ""
        (args.results / f"create-{count}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=1))
        missed += [f"N={count}: {k}" for k, ok in result["targets"].items() if not ok]
    print("targets: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
