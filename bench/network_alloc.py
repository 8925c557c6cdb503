"""Allocating N addresses in one commit against the floor of N atomic creates, on a local goiardi.

    python bench/network_alloc.py [--machines 20000] [--concurrency 16] [--levels 8 16] [--claim-ahead N] [--memory]

Seeds N ready machines (nodes and their crowbar-<node> roles), commits the
network proposal (admin: a /16 whose host range holds N + 100 addresses),
then measures, in one run on the same server:

1. the floor: N atomic creates of items the size of an allocation item
   (what any allocator that cannot lose or double an address must at least
   send) at each of ``--levels`` requests in flight, before and after the
   commits: the fastest of them is the floor;
2. with ``--concurrency`` requests in flight (one of the levels), a commit
   putting every machine into an element that needs no network
   (the commit's own cost: each role read and written once);
3. a commit putting every machine into an element that needs ``admin``: the
   same role writes, each carrying the machine's new address, plus one
   atomic create per address. Its allocation cost is (3) - (2);
4. the same commit again (every machine keeps its address: nothing written);
5. requests per address ((3)'s requests minus (2)'s, per machine), the
   largest allocation item and the largest role, in bytes (Crowbar's one item
   per network would hold all N allocations).

Before each of these steps the database is settled (``VACUUM ANALYZE`` and
``CHECKPOINT``; PostgreSQL only), so that no step pays for the garbage of
the one before (a run without saw the floor's creates take 41 s before the
commits and 118 s after them); ``--no-settle`` measures without.

Prints one JSON object; exit status 1 when (3) - (2) is over 1.3 x (1), an
item is over 1% of the 1,000,000-byte request limit, or the N addresses are
not N distinct items named by their machines' roles.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from barclamp_sdk import Attributes, Barclamp, Element  # noqa: E402
from barclamp_sdk.api import Crowbar  # noqa: E402
from barclamp_sdk.local import LocalChefServer  # noqa: E402
from barclamp_sdk.model.addresses import ADDRESSES_BAG, item_id  # noqa: E402
from barclamp_sdk.model.commit import write  # noqa: E402
from barclamp_sdk.model.naming import node_role_name  # noqa: E402
from barclamp_sdk.model.parallel import run_parallel  # noqa: E402
from barclamps.network import Network  # noqa: E402
from scale import seed  # noqa: E402  (bench/ is the script's directory)

REQUEST_LIMIT = 1_000_000
SECRET = b"bench secret"


class Plain(Barclamp):
    """Every machine in one element that needs no network."""

    name = "plain"
    order = 50
    Attributes = Attributes
    elements = (Element("plain-worker", recipes=("plain::worker",), priority=50),)

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("plain-worker", *inventory.names())


class Addressed(Barclamp):
    """Every machine in one element that needs the admin network."""

    name = "addressed"
    order = 51
    Attributes = Attributes
    elements = (Element("addressed-worker", recipes=("addressed::worker",), priority=51),)
    networks = {"addressed-worker": ("admin",)}

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("addressed-worker", *inventory.names())


def admin_network(count: int) -> dict[str, Any]:
    end = ipaddress.ip_address("10.0.0.10") + count + 100
    return {"conduit": "intf0", "vlan": 0, "use_vlan": False, "add_bridge": False, "subnet": "10.0.0.0",
            "netmask": "255.255.0.0", "broadcast": "10.0.255.255", "router": "10.0.0.1", "router_pref": 10,
            "ranges": {"host": {"start": "10.0.0.10", "end": str(end)}}, "share_segment_with": []}


def floor(chef: Any, count: int, concurrency: int, bag: str) -> float:
    """N atomic creates of allocation-sized items."""
    chef.data_bags.ensure(bag)
    body = {"network": "admin", "address": "10.0.255.254", "machine": "m000000.bench.example.com",
            "at": "2026-01-01T00:00:00.000000Z"}
    started = time.perf_counter()
    run_parallel(lambda i: chef.data_bags.create_item(bag, {**body, "id": f"admin-10_0_{i >> 8}_{i & 255}"}),
                 range(count), workers=concurrency, name="floor")
    return time.perf_counter() - started


def settle(server: LocalChefServer, enabled: bool) -> float:
    """VACUUM ANALYZE and CHECKPOINT the server's database (seconds taken; 0 in memory)."""
    if not enabled or server.memory:
        return 0.0
    started = time.perf_counter()
    subprocess.run(server.database.psql() + ["-c", "VACUUM ANALYZE", "-c", "CHECKPOINT"],
                   check=True, stdout=subprocess.DEVNULL, timeout=3600)
    return time.perf_counter() - started


def counted(chef: Any, action: Any) -> tuple[float, Any, dict[str, int]]:
    before = chef.stats.snapshot()
    started = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - started
    after = chef.stats.snapshot()
    return seconds, value, {k: v - before.get(k, 0) for k, v in after.items()
                            if isinstance(v, int) and k != "largest_body" and v != before.get(k, 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16, help="the commits' requests in flight")
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 16],
                        help="requests in flight tried for the floor (the fastest is taken)")
    parser.add_argument("--claim-ahead", type=int, default=None,
                        help="machines whose addresses the commit claims at once (default: the library's)")
    parser.add_argument("--memory", action="store_true", help="goiardi's in-memory store")
    parser.add_argument("--no-settle", dest="settle", action="store_false",
                        help="do not VACUUM and CHECKPOINT the database between steps")
    args = parser.parse_args()
    count = args.machines
    if args.claim_ahead is not None:
        write.CLAIM_AHEAD = args.claim_ahead
    levels = sorted(set(args.levels) | {args.concurrency})
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        chef = server.client(max_connections=max(levels) * 2)
        started = time.perf_counter()
        names = seed(chef, count, args.concurrency)
        print(f"seeded {count} machines in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        crowbar = Crowbar(chef, barclamps=[Network, Plain, Addressed], secret=SECRET,
                          concurrency=args.concurrency)
        crowbar.proposals.create("network", "default")
        crowbar.proposals.set("network", "default", {"networks": {"admin": admin_network(count)}})
        assert crowbar.proposals.commit("network", "default").status == "applied"
        crowbar.proposals.create("plain", "default")
        crowbar.proposals.create("addressed", "default")

        settled = []

        def settled_floor(level: int, bag: str) -> float:
            settled.append(settle(server, args.settle))
            return floor(chef, count, level, bag)

        floor_before = {level: settled_floor(level, f"bench_floor_{level}") for level in levels}
        print(f"floor: {count} creates in {floor_before} s (by requests in flight)", file=sys.stderr)
        settled.append(settle(server, args.settle))
        plain, result, plain_requests = counted(chef, lambda: crowbar.proposals.commit("plain", "default"))
        assert result.status == "applied", result.reasons
        print(f"commit without addresses: {plain:.1f}s", file=sys.stderr)
        settled.append(settle(server, args.settle))
        net, result, net_requests = counted(chef, lambda: crowbar.proposals.commit("addressed", "default"))
        assert result.status == "applied", result.reasons
        print(f"commit with {count} addresses: {net:.1f}s", file=sys.stderr)
        again, result, again_requests = counted(chef, lambda: crowbar.proposals.commit("addressed", "default"))
        floor_after = {level: settled_floor(level, f"bench_floor_after_{level}") for level in levels}
        print(f"floor again: {floor_after} s", file=sys.stderr)

        rows = crowbar.addresses.items("admin")
        roles = run_parallel(lambda n: chef.roles.get(node_role_name(n)), names, workers=args.concurrency,
                             name="roles")
        named = {n: r["default_attributes"]["crowbar"]["network"]["admin"]["address"] for n, r in zip(names, roles)}
        consistent = ({r["address"]: r["machine"] for r in rows} == {a: n for n, a in named.items()}
                      and len(set(named.values())) == count)
        largest_item = max(len(json.dumps(chef.data_bags.get_item(ADDRESSES_BAG, item_id("admin", a))))
                           for a in list(named.values())[:: max(1, count // 50)])
        largest_role = max(len(json.dumps(r)) for r in roles)
    best_floor = min([*floor_before.values(), *floor_after.values()])
    cost = net - plain
    extra = {k: net_requests.get(k, 0) - plain_requests.get(k, 0) for k in set(net_requests) | set(plain_requests)}
    out = {
        "machines": count, "concurrency": args.concurrency, "claim_ahead": write.CLAIM_AHEAD,
        "store": "memory" if args.memory else "postgresql",
        "floor_seconds": round(best_floor, 2),
        "floor_before_after": {str(level): [round(floor_before[level], 2), round(floor_after[level], 2)]
                               for level in levels},
        "commit_without_addresses_seconds": round(plain, 2), "commit_with_addresses_seconds": round(net, 2),
        "allocation_seconds": round(cost, 2), "ratio": round(cost / best_floor, 3),
        "settled": args.settle and not args.memory, "settle_seconds": [round(t, 1) for t in settled],
        "recommit_seconds": round(again, 2), "recommit_writes": again_requests.get("writes", 0),
        "requests_per_address": {k: round(v / count, 3) for k, v in sorted(extra.items()) if v},
        "commit_with_addresses_requests": net_requests,
        "addresses": len(rows), "consistent": consistent,
        "largest_item_bytes": largest_item, "largest_item_share_of_limit": round(largest_item / REQUEST_LIMIT, 5),
        "largest_role_bytes": largest_role, "crowbar_one_item_bytes_estimate": count * 80,
    }
    print(json.dumps(out))
    ok = out["ratio"] <= 1.3 and largest_item <= REQUEST_LIMIT // 100 and consistent and len(rows) == count
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
