"""Documents shaped for scale: no request body grows past a fraction of the server's limit.

A real Chef Infra Server refuses bodies over 1,000,000 bytes. The body-size
gate: a swift proposal for 2,000 storage machines (64-character FQDNs, 24
data disks each) is created, committed, diffed, shown and read back from
history, and no request the library sends is longer than 500,000 bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barclamp_sdk import Attributes, Barclamp, Element
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.noderoles import crowbar_data, new_node_role, seal
from barclamp_sdk.model.parts import PART_BYTES, PARTS_BAG, PARTS_KEY, join, references, split
from barclamp_sdk.testing import wait_indexed
from barclamp_sdk.testing.fleet import PROFILES, Disk, ohai_data

#: The gate: half the limit of a real Chef Infra Server.
BODY_GATE = 500_000
MACHINES = 2000
DOMAIN = "object-storage.west-region.datacenter-0001.example.com"


def machine_name(index: int) -> str:
    name = f"st{index:07d}.{DOMAIN}"
    assert len(name) == 64
    return name


def seed_storage(chef, count: int, *, readying: int = 0, compute: int = 0) -> list[str]:
    """``count`` ready storage servers with 24 data disks, as discovery and booting leave them
    (the last ``compute`` of them compute servers, named ``cp...``)."""
    base = PROFILES["storage"]
    profile = dataclasses.replace(base, disks=(base.disks[0],) + tuple(
        Disk(f"sd{chr(ord('b') + i)}" if i < 25 else f"sda{chr(ord('a') + i - 25)}", 8000, True, "ST8000NM000A")
        for i in range(24)))
    names = [machine_name(i) for i in range(1, count + 1 - compute)]
    names += [f"cp{i:07d}.{DOMAIN}" for i in range(count + 1 - compute, count + 1)]

    def one(item: tuple[int, str]) -> None:
        index, name = item
        kind = PROFILES["compute"] if name.startswith("cp") else profile
        automatic = ohai_data(kind, name, index, domain=DOMAIN, address=f"10.2.{index >> 8 & 255}.{index & 255}")
        chef.nodes.create({"name": name, "chef_environment": "_default", "json_class": "Chef::Node",
                           "chef_type": "node", "run_list": [f"role[{node_role_name(name)}]"],
                           "normal": {"crowbar_wall": {"boot_disk": "sda"}}, "default": {}, "override": {},
                           "automatic": automatic})
        role = new_node_role(name, "readying" if index > count - readying else "ready")
        crowbar_data(role)["allocated"] = True
        seal(role)
        chef.roles.create(role)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, enumerate(names, 1)))
    return names


# -- the rule, pure -----------------------------------------------------------------------

def per_machine(count: int, disks: int = 24) -> dict:
    names = [machine_name(i) for i in range(count)]
    return {"id": "bc-swift-default",
            "attributes": {"swift": {"replicas": 3, "devices": {
                n: [{"name": f"sd{k}", "zone": k % 3 + 1, "weight": 8.0} for k in range(disks)] for n in names}}},
            "deployment": {"swift": {"elements": {"swift-storage": names, "swift-proxy": names[:1]}}}}


def test_split_documents_join_back_whole_and_every_piece_is_small():
    document = per_machine(3000)
    head, parts = split(document, "bc-swift-default")
    assert len(json.dumps(document)) > 3_000_000
    assert len(json.dumps(head)) < 100_000
    assert max(len(json.dumps(p, separators=(",", ":"))) for p in parts.values()) < PART_BYTES + 1000 < BODY_GATE
    assert len(parts) < len(json.dumps(document)) / 200_000  # large parts: few requests per document
    assert references(head) <= set(parts)
    assert join(head, lambda ids: {i: parts[i] for i in ids}) == document
    small = {"id": "x", "attributes": {"a": [1, 2, 3]}}
    assert split(small, "x") == (small, {})


def test_moving_one_machine_changes_few_parts():
    document = per_machine(3000)
    before = split(document, "bc-swift-default")[1]
    moved = copy.deepcopy(document)
    node = moved["deployment"]["swift"]["elements"]["swift-storage"].pop(1500)
    moved["deployment"]["swift"]["elements"]["swift-proxy"].append(node)
    del moved["attributes"]["swift"]["devices"][node]
    after = split(moved, "bc-swift-default")[1]
    assert len(set(after) - set(before)) <= 3


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.lists(st.integers(), max_size=30), max_size=200))
def test_any_document_splits_and_joins_back(entries):
    document = {"id": "p", "data": entries, "list": [entries] * 3}
    head, parts = split(document, "p", limit=300)
    assert join(head, lambda ids: {i: parts[i] for i in ids}) == document


# -- per-machine settings live with the machine -----------------------------------------------

def test_per_machine_settings_go_into_each_machines_role_and_leave_with_it(crowbar, chef, fleet):
    names = seed_storage(chef, 4)
    proposal = crowbar.proposals.create("swift", "default")
    assert crowbar.proposals.commit("swift", "default").status == "applied"
    config = chef.roles.get("swift-config-default")
    assert "devices" not in config["default_attributes"]["swift"]
    node = fleet.converge(names[1])  # chef-client's merge: the node's recipes read node[:swift][:devices]
    assert node["default"]["swift"]["devices"] == {names[1]: proposal.attributes["devices"][names[1]]}
    assert node["default"]["swift"]["replicas"] == proposal.attributes["replicas"]
    writes = chef.stats.snapshot()["writes"]
    assert crowbar.proposals.commit("swift", "default").status in ("applied", "unchanged")
    assert chef.stats.snapshot()["writes"] - writes <= 1  # nothing changed: at most the status

    def reweigh(p):
        settings = p.settings
        settings.devices[names[2]][0].weight = 0.5
        p.settings = settings

    crowbar.proposals.update("swift", "default", reweigh, change="reweigh one disk")
    assert crowbar.proposals.commit("swift", "default").status == "applied"
    devices = chef.roles.get(node_role_name(names[2]))["default_attributes"]["swift"]["devices"][names[2]]
    assert devices[0]["weight"] == 0.5

    assert crowbar.proposals.deactivate("swift", "default").status == "deactivated"
    for name in names:
        role = chef.roles.get(node_role_name(name))
        assert "swift" not in role["default_attributes"]
        assert "node_attributes" not in crowbar_data(role)


class WideAttributes(Attributes):
    allowed: list[str] = []


class Wide(Barclamp):
    """A barclamp whose settings alone pass the split size: its config role is stored in parts."""

    name = "wide"
    Attributes = WideAttributes
    elements = (Element("wide-server", recipes=("wide::server",)),)

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("wide-server", *inventory.names())


@pytest.fixture
def barclamps_under_test():
    return [Wide]


def test_a_config_role_in_parts_commits_again_without_drift_or_writes(crowbar, chef):
    seed_storage(chef, 2)
    allowed = [f"client-{i:05d}.{DOMAIN}" for i in range(3000)]
    crowbar.proposals.create("wide", "default", settings={"allowed": json.dumps(allowed)})
    assert crowbar.proposals.commit("wide", "default").status == "applied"
    role = chef.roles.get("wide-config-default")
    assert set(role["default_attributes"]["wide"]["allowed"]) == {PARTS_KEY}
    assert crowbar.proposals.applied("wide", "default").attributes["allowed"] == allowed
    writes = chef.stats.snapshot()["writes"]
    assert crowbar.proposals.commit("wide", "default").status in ("applied", "unchanged")
    assert chef.stats.snapshot()["writes"] - writes <= 1  # the config role is not rewritten, nor drifted
    crowbar.proposals.set("wide", "default", {"allowed": json.dumps(allowed[:-1])})
    assert crowbar.proposals.commit("wide", "default").status == "applied"  # no drift reported
    assert crowbar.proposals.diff("wide", "default").changes == []


# -- creating from the inventory: one read of the cluster ----------------------------------------

#: Requests a create may send besides its one read of the cluster (locks, document, history,
#: secrets, audit entry, bags): a fixed number, whatever the number of machines.
CREATE_REQUESTS = 26


@pytest.mark.parametrize("barclamp", ["swift", "ceph", "nova"])
def test_creating_a_proposal_from_50_machines_reads_the_cluster_once_and_no_machine_alone(crowbar, chef, barclamp):
    names = seed_storage(chef, 50, compute=5)
    wait_indexed(chef, "node", names)  # search has caught up: no machine needs a direct read
    wait_indexed(chef, "role", [node_role_name(n) for n in names])
    before = chef.stats.snapshot()
    proposal = crowbar.proposals.create(barclamp, "default")
    after = chef.stats.snapshot()
    sent = Counter(after["by_endpoint"])
    sent.subtract(before["by_endpoint"])
    requests = after["reads"] + after["writes"] - before["reads"] - before["writes"]
    element = {"swift": "swift-storage", "ceph": "ceph-osd", "nova": "nova-multi-compute-kvm"}[barclamp]
    assert len(proposal.elements[element]) == (4 if barclamp == "nova" else 45)  # nova: the 5th is the controller
    assert (sent["GET /roles"], sent["GET /nodes"], sent["POST /search/*"]) == (1, 1, 2), sent  # the whole cluster, once
    assert sent["GET /nodes/*"] == 0 and sent["GET /roles/*"] <= 2, sent  # no machine read alone (config roles only)
    assert requests <= CREATE_REQUESTS, sent


# -- the gate, against the real server ----------------------------------------------------------

def test_a_2000_machine_swift_proposal_keeps_every_request_body_under_500000_bytes(crowbar, chef):
    names = seed_storage(chef, MACHINES, readying=1)
    proposal = crowbar.proposals.create("swift", "default")
    assert len(proposal.elements["swift-storage"]) == MACHINES
    devices = proposal.settings.devices
    assert all(len(devices[n]) == 24 for n in names)
    whole = json.dumps(proposal.data)
    assert len(whole) > 2_000_000  # what used to be one item

    # One machine is still booting: the commit waits in the queue, its 2,000 machines with it.
    assert crowbar.proposals.commit("swift", "default").status == "queued"
    [queued] = crowbar.queue.items()
    assert len(queued["elements"]) == MACHINES
    assert len(json.dumps(chef.data_bags.get_item("crowbar", "queue"))) < BODY_GATE
    crowbar.machines.transition(names[-1], "ready")  # reaching ready processes the queue
    assert crowbar.proposals.status("swift", "default").status == "ready"
    assert crowbar.queue.items() == []
    moved = names[7]

    def retire(p):
        settings = p.settings
        del settings.devices[moved]
        p.settings = settings
        p.unassign("swift-storage", moved)

    crowbar.proposals.update("swift", "default", retire, change="retire one machine")
    diff = crowbar.proposals.diff("swift", "default", 1, 2)
    assert moved in diff.text and any(moved in str(c) for c in diff.changes)
    shown = crowbar.proposals.get("swift", "default")  # what `proposal show` prints: whole
    assert moved not in shown.elements["swift-storage"] and len(shown.elements["swift-storage"]) == MACHINES - 1
    assert crowbar.proposals.revision("swift", "default", 1).data == json.loads(whole)
    assert [h["revision"] for h in crowbar.proposals.history("swift", "default")] == [1, 2]

    # The committed config role is small: each machine's disks are in its own role.
    role = chef.roles.get("swift-config-default")
    assert len(json.dumps(role)) < BODY_GATE
    assert "devices" not in role["default_attributes"]["swift"]
    storage = role["override_attributes"]["swift"]["elements"]["swift-storage"]
    assert set(storage) == {PARTS_KEY}  # 2,000 names: a recipe reassembles them from crowbar_parts
    assembled = []
    for part_id in storage[PARTS_KEY]:
        item = chef.data_bags.get_item(PARTS_BAG, part_id)
        assert item["kind"] == "array" and item["owner"] == "bc-swift-default"
        assembled += item["entries"]
    assert assembled == proposal.elements["swift-storage"]
    node_role = chef.roles.get(node_role_name(names[0]))
    assert "swift-storage" in crowbar_data(node_role)["run_list_map"]
    assert crowbar_data(node_role)["claimed_disks"].get("sdb") == "swift-default"
    assert node_role["default_attributes"]["swift"]["devices"] == {names[0]: proposal.attributes["devices"][names[0]]}

    stats = chef.stats.snapshot()
    print(f"largest request body: {stats['largest_body']:,} bytes ({stats['largest_request']}); "
          f"proposal document {len(whole):,} bytes whole")
    assert stats["largest_body"] < BODY_GATE, stats["largest_request"]

    assert crowbar.proposals.commit("swift", "default").status == "applied"
    assert crowbar.proposals.deactivate("swift", "default").status == "deactivated"
    crowbar.proposals.delete("swift", "default")
    assert not [i for i in chef.data_bags.items(PARTS_BAG) if i.startswith("bc-swift-default-")]
