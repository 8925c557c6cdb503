"""The audit trail's cost: recording an entry, reading the trail, pruning.

Starts a local goiardi (PostgreSQL unless --memory), then:

* record: N entries one after the other (requests and milliseconds per entry);
* read: ``entries(limit=200)`` (what ``crowbar audit`` shows) and a filtered
  read over all N (``--proposal``), wall time;
* prune: the retention pass with ``keep`` = N/2 (one listing, N/2 deletes).

    python bench/audit.py [--entries 1000] [--memory]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.model.audit import AuditTrail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        client = server.client()
        trail = AuditTrail(client, prune_every=10 ** 9)
        before = client.stats.snapshot()
        started = time.perf_counter()
        for i in range(args.entries):
            trail.record("edit", f"widget/p{i % 10}", details={"keys": ["attributes.widget.port"]},
                         proposal=f"widget/p{i % 10}", revision=i)
        record_s = time.perf_counter() - started
        after = client.stats.snapshot()
        requests = after["reads"] + after["writes"] - before["reads"] - before["writes"]
        started = time.perf_counter()
        newest = trail.entries(limit=200)
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        filtered = trail.entries(proposal="widget/p3", limit=None)
        filtered_s = time.perf_counter() - started
        started = time.perf_counter()
        pruned = AuditTrail(client, keep=args.entries // 2).prune()
        prune_s = time.perf_counter() - started
        print(json.dumps({
            "store": "memory" if args.memory else "postgresql", "entries": args.entries,
            "requests_per_entry": round(requests / args.entries, 2),
            "record_ms_per_entry": round(1000 * record_s / args.entries, 2),
            "read_newest_200_s": round(read_s, 2), "read_filtered_all_s": round(filtered_s, 2),
            "filtered_found": len(filtered), "newest_found": len(newest),
            "prune_s": round(prune_s, 2), "pruned": len(pruned),
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
