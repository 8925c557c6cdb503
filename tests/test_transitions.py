"""Many machines transitioning at once (Machines.transition_many) and the diff of huge documents."""

from __future__ import annotations

import difflib
import random

from barclamp_sdk.errors import InvalidTransition
from barclamp_sdk.model import textdiff
from barclamp_sdk.model.naming import MACHINE_LOCK_SHARDS, machine_shard
from barclamp_sdk.model.states import LIFECYCLE


def _requests(stats_before, stats_after, endpoint):
    return stats_after["by_endpoint"].get(endpoint, 0) - stats_before["by_endpoint"].get(endpoint, 0)


def test_a_batch_of_transitions_costs_one_role_read_and_write_each_and_one_lock_per_shard(crowbar, fleet, chef):
    names = fleet.add(40, "compute")
    fleet.boot(names)
    crowbar.machines.allocate(names)
    before = chef.stats.snapshot()
    report = crowbar.machines.transition_many({name: "hardware-installing" for name in names})
    after = chef.stats.snapshot()
    assert not report.failed
    assert {r.state for r in report.records.values()} == {"hardware-installing"} and len(report.records) == 40
    shards = len({machine_shard(n) for n in names})
    assert shards <= MACHINE_LOCK_SHARDS
    assert _requests(before, after, "GET /roles/*") == 40
    assert _requests(before, after, "PUT /roles/*") == 40
    assert _requests(before, after, "POST /data/*") == shards  # one lock item per shard, not per machine
    assert _requests(before, after, "DELETE /data/*") == shards
    assert crowbar.locks.takeovers == 0
    assert {crowbar.machines.state(n) for n in names} == {"hardware-installing"}


def test_a_machine_that_cannot_move_is_reported_and_the_others_move(crowbar, fleet, chef):
    names = fleet.add(3, "compute")
    fleet.boot(names)
    crowbar.machines.allocate(names[:2])  # the third still waits for allocation
    report = crowbar.machines.transition_many({n: "hardware-installing" for n in names})
    assert sorted(report.records) == names[:2]
    assert isinstance(report.failed[names[2]], InvalidTransition)
    assert "waiting for allocation" in str(report.failed[names[2]])
    assert crowbar.machines.state(names[2]) == "discovered"
    missing = crowbar.machines.transition_many({"no-such-machine.example.com": "installing"})
    assert "no machine 'no-such-machine.example.com'" in str(missing.failed["no-such-machine.example.com"])


def test_the_fleet_boots_in_step_with_two_requests_per_transition_besides_chef_client(crowbar, fleet, chef):
    names = fleet.add(20, "compute", clients=False)
    assert set(fleet.boot(names).values()) == {"discovered"}
    crowbar.machines.allocate(names)
    before = chef.stats.snapshot()
    assert set(fleet.boot(names).values()) == {"ready"}
    after = chef.stats.snapshot()
    steps = LIFECYCLE.index("ready") - LIFECYCLE.index("discovered")
    converges = _requests(before, after, "PUT /nodes/*")
    assert converges == steps * len(names)  # one simulated chef-client run per state
    assert _requests(before, after, "PUT /roles/*") == steps * len(names)
    # the roles read: one per machine to start, one per transition, one per chef-client run
    assert _requests(before, after, "GET /roles/*") == len(names) + 2 * steps * len(names)
    assert _requests(before, after, "GET /nodes/*") == steps * len(names)  # chef-client only
    assert _requests(before, after, "POST /data/*") <= steps * MACHINE_LOCK_SHARDS
    assert crowbar.locks.takeovers == 0


def test_the_unified_diff_matches_difflib_on_small_documents_and_applies_on_huge_ones():
    rng = random.Random(7)
    for _ in range(200):
        a = [f"{rng.randint(0, 8)}\n" for _ in range(rng.randint(0, 50))]
        b = list(a)
        for _ in range(rng.randint(0, 5)):
            b.insert(rng.randint(0, len(b)), f"{rng.randint(0, 12)}\n")
        assert list(textdiff.unified_diff(a, b, "x", "y")) == list(difflib.unified_diff(a, b, "x", "y"))
    # a swift-like document: 3,000 machines of 8 near-identical disk lines; one machine retired, one changed
    machines = [f'  "st{i:07d}.example.com": [\n' for i in range(3000)]
    old = [line for m in machines for line in (m, *('    {"name": "sdb", "weight": 8000},\n',) * 8, "  ],\n")]
    new = list(old)
    del new[70:80]
    new[20000] = '    {"name": "sdb", "weight": 4000},\n'
    patch = list(textdiff.unified_diff(old, new, "r1", "r2"))
    assert patch[:2] == ["--- r1\n", "+++ r2\n"]
    assert _apply(old, patch) == new
    assert sum(line.startswith("-") for line in patch[2:]) == 11 and sum(line.startswith("+") for line in patch[2:]) == 1


def _apply(old, patch):
    out, at = [], 0
    for line in patch[2:]:
        if line.startswith("@@"):
            start, _, length = line.split()[1][1:].partition(",")
            begin = int(start) - (0 if length == "0" else 1)
            out += old[at:begin]
            at = begin
        elif line[0] == " ":
            out.append(line[1:])
            at += 1
        elif line[0] == "-":
            at += 1
        else:
            out.append(line[1:])
    return out + old[at:]
