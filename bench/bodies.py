"""Request bodies of a storage proposal at scale: the largest one the library sends.

    python bench/bodies.py --machines 20000 --barclamp swift [--barclamp ceph] [--memory]

For each barclamp it starts a fresh goiardi (on PostgreSQL; ``--memory`` in
memory), seeds N ready storage servers with 24 data disks and 64-character
FQDNs, then creates, commits, diffs (after retiring one machine), shows and
reads back the history of a proposal, and reports the largest request body
sent (target: under 500,000 bytes; a real Chef Infra Server refuses bodies
over 1,000,000), with the size of the whole proposal document and the time
of each step. Results go to ``bench/results/bodies-<barclamp>-N.json``; the
exit status is 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from barclamp_sdk.api import Crowbar  # noqa: E402
from barclamp_sdk.local import LocalChefServer  # noqa: E402
from barclamp_sdk.testing.fleet import PROFILES, Disk  # noqa: E402
from scale import seed as seed_machines  # noqa: E402  (bench/ is the script's directory)

RESULTS = ROOT / "bench" / "results"
SECRET = b"bench secret"
TARGET = 500_000
DOMAIN = "object-storage.west-region.datacenter-0001.example.com"
SETTING = {"swift": "devices", "ceph": "osd_devices"}


def seed(chef: Any, count: int, concurrency: int) -> list[str]:
    base = PROFILES["storage"]
    profile = dataclasses.replace(base, disks=(base.disks[0],) + tuple(
        Disk(f"sd{chr(ord('b') + i)}", 8000, True, "ST8000NM000A") for i in range(24)))
    names = [f"st{i:07d}.{DOMAIN}" for i in range(1, count + 1)]
    return seed_machines(chef, count, concurrency, profile=profile, names=names, domain=DOMAIN)


def run(barclamp: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        chef = server.client(max_connections=args.concurrency * 2)
        started = time.perf_counter()
        names = seed(chef, count, args.concurrency)
        seconds = {"seed": round(time.perf_counter() - started, 1)}
        print(f"{barclamp} N={count}: seeded in {seconds['seed']}s", file=sys.stderr)
        chef.stats.largest_body, chef.stats.largest_request = 0, ""  # the seeding is not the library's
        crowbar = Crowbar(chef, secret=SECRET, concurrency=args.concurrency)

        def step(label: str, action: Any) -> Any:
            begun = time.perf_counter()
            outcome = action()
            seconds[label] = round(time.perf_counter() - begun, 2)
            print(f"{barclamp} N={count}: {label} {seconds[label]}s", file=sys.stderr)
            return outcome

        proposal = step("create", lambda: crowbar.proposals.create(barclamp, "default"))
        document = len(json.dumps(proposal.data))
        status = step("commit", lambda: crowbar.proposals.commit(barclamp, "default")).status
        retired = names[7]

        def retire(p: Any) -> None:
            p.attributes[SETTING[barclamp]].pop(retired, None)
            for members in p.elements.values():
                if retired in members:
                    members.remove(retired)

        step("edit", lambda: crowbar.proposals.update(barclamp, "default", retire, change="retire one machine"))
        diff = step("diff", lambda: crowbar.proposals.diff(barclamp, "default", 1, 2))
        shown = step("show", lambda: crowbar.proposals.get(barclamp, "default"))
        step("history", lambda: [crowbar.proposals.revision(barclamp, "default", h["revision"])
                                 for h in crowbar.proposals.history(barclamp, "default")])
        recommit = step("commit_again", lambda: crowbar.proposals.commit(barclamp, "default")).status
        stats = chef.stats.snapshot()
    result = {
        "barclamp": barclamp, "machines": count, "backend": "memory" if args.memory else "postgresql",
        "document_bytes": document, "largest_body": stats["largest_body"], "largest_request": stats["largest_request"],
        "commit": status, "commit_again": recommit, "diff_changes": len(diff.changes),
        "shown_machines": len(shown.nodes()), "seconds": seconds, "cpus": os.cpu_count(),
        "load": [round(x, 1) for x in os.getloadavg()],
    }
    result["targets"] = {"largest_body": stats["largest_body"] < TARGET, "applied": status == "applied"}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, action="append", help="N (repeatable); default 2000")
    parser.add_argument("--barclamp", choices=sorted(SETTING), action="append", help="default swift")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="goiardi's in-memory store")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory for the JSON results")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    missed = []
    for barclamp in args.barclamp or ["swift"]:
        for count in args.machines or [2000]:
            result = run(barclamp, count, args)
            result["command"] = "python bench/bodies.py " + " ".join(sys.argv[1:])
            (args.results / f"bodies-{barclamp}-{count}.json").write_text(json.dumps(result, indent=2) + "\n")
            print(json.dumps(result))
            missed += [f"{barclamp} N={count}: {k}" for k, ok in result["targets"].items() if not ok]
    print("targets: " + ("all met" if not missed else "MISSED " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
