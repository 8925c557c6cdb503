"""Allocating N addresses at once against the floor of N atomic creates, on a local goiardi.

    python bench/network_alloc.py [--machines 20000] [--concurrency 8] [--memory]

Seeds N machine roles (as discovery leaves them), then measures, in one run:

1. the floor: N atomic creates of items the size of an allocation item, with
   the same concurrency (what any allocator that cannot lose or double an
   address must at least send);
2. :meth:`AddressBook.allocate` of one address for each of the N machines
   (one create per address, plus each role read and written once, under the
   shard locks);
3. the same allocation again (every machine keeps its address: reads only);
4. the largest allocation item and the largest role, in bytes (Crowbar's one
   item per network would hold all N allocations).

Prints one JSON object; exit status 1 when (2) is over 1.3 x (1) or an item
is over 1% of the 1,000,000-byte request limit. The role read and write of
each machine are the allocation's index by machine, and a commit writes
each role anyway; (2) counts them, so its ratio is an upper bound.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from barclamp_sdk.local import LocalChefServer  # noqa: E402
from barclamp_sdk.model.addresses import ADDRESSES_BAG, AddressBook, item_id  # noqa: E402
from barclamp_sdk.model.locks import LockManager  # noqa: E402
from barclamp_sdk.model.noderoles import NodeRoleStore  # noqa: E402
from barclamp_sdk.model.parallel import run_parallel  # noqa: E402

REQUEST_LIMIT = 1_000_000


def networks(count: int) -> dict[str, Any]:
    end = ipaddress.ip_address("10.0.0.10") + count + 100
    return {"admin": {"subnet": "10.0.0.0", "netmask": "255.255.0.0", "broadcast": "10.0.255.255",
                      "vlan": 0, "use_vlan": False, "conduit": "intf0", "router": "10.0.0.1",
                      "ranges": {"host": {"start": "10.0.0.10", "end": str(end)}}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--memory", action="store_true", help="goiardi's in-memory store")
    args = parser.parse_args()
    count = args.machines
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        chef = server.client(max_connections=args.concurrency * 2)
        names = [f"m{i:06d}.bench.example.com" for i in range(count)]
        roles = NodeRoleStore(chef, LockManager(chef), concurrency=args.concurrency)
        started = time.perf_counter()
        run_parallel(lambda n: roles.create(n, "discovered"), names, workers=args.concurrency, name="seed")
        print(f"seeded {count} roles in {time.perf_counter() - started:.1f}s", file=sys.stderr)

        chef.data_bags.ensure("bench_floor")
        body = {"network": "admin", "address": "10.0.255.254", "machine": names[0], "at": "2026-01-01T00:00:00Z"}
        started = time.perf_counter()
        run_parallel(lambda i: chef.data_bags.create_item("bench_floor", {**body, "id": f"admin-{i}"}),
                     range(count), workers=args.concurrency, name="floor")
        floor = time.perf_counter() - started
        print(f"floor: {count} creates in {floor:.1f}s", file=sys.stderr)

        book = AddressBook(chef, roles, lambda: networks(count), concurrency=args.concurrency)
        before = chef.stats.snapshot()
        started = time.perf_counter()
        report = book.allocate("admin", names, user="bench")
        allocate = time.perf_counter() - started
        requests = chef.stats.snapshot()
        print(f"allocate: {len(report.allocated)} in {allocate:.1f}s", file=sys.stderr)
        started = time.perf_counter()
        again = book.allocate("admin", names, user="bench")
        reallocate = time.perf_counter() - started
        addresses = set(report.allocated.values())
        sample = names[:: max(1, count // 50)]
        biggest_item = max(len(json.dumps(chef.data_bags.get_item(ADDRESSES_BAG, item_id("admin", report.allocated[n]))))
                           for n in sample)
        biggest_role = max(len(json.dumps(roles.get(n))) for n in sample)
    result = {
        "machines": count, "concurrency": args.concurrency,
        "floor_seconds": round(floor, 2), "allocate_seconds": round(allocate, 2),
        "ratio": round(allocate / floor, 2), "reallocate_seconds": round(reallocate, 2),
        "allocated": len(report.allocated), "distinct": len(addresses), "kept_again": len(again.kept),
        "requests": {k: v - before.get(k, 0) for k, v in requests.items()
                     if isinstance(v, int) and v != before.get(k, 0)},
        "largest_item_bytes": biggest_item, "largest_role_bytes": biggest_role,
        "crowbar_one_item_bytes_estimate": count * 80,
    }
    print(json.dumps(result))
    ok = result["ratio"] <= 1.3 and biggest_item <= REQUEST_LIMIT // 100 and len(addresses) == count
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
