"""The network barclamp: layout checks, conduits, and addresses allocated as data on a real server."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import barclamp_sdk.model.commit.committer as committer
from barclamp_sdk import ValidationError
from barclamp_sdk.errors import DriftError
from barclamp_sdk.model.addresses import ADDRESSES_BAG, item_id
from barclamp_sdk.model.naming import node_role_name
from barclamps.network import DISCOVERY_USER, Network, NetworkAttributes, conduits_of, nics_of
from barclamps.network.checks import check_networks
from barclamps.network.conduits import Nic
from tests.support.widgets import TEST_BARCLAMPS, Storer

ROOT = Path(__file__).resolve().parent.parent
CONDUITS = {"intf0", "intf1", "intf2"}


@pytest.fixture
def barclamps_under_test():
    return [*TEST_BARCLAMPS, Storer]


def layout(**changes):
    networks = {n: d.model_dump() for n, d in NetworkAttributes().networks.items()}
    for key, value in changes.items():
        network, _, field = key.partition("__")
        networks[network][field] = value
    return networks


def network_entry(chef, machine):
    return chef.roles.get(node_role_name(machine))["default_attributes"]["crowbar"].get("network", {})


def commit_network(crowbar, **settings):
    crowbar.proposals.create("network", "default")
    if settings:
        crowbar.proposals.set("network", "default", settings)
    assert crowbar.proposals.commit("network", "default").status == "applied"


# -- the layout, without a server ---------------------------------------------------------------


def test_the_template_is_crowbars_layout_and_sane():
    attributes = Network().default_attributes()
    admin = attributes["networks"]["admin"]
    assert set(admin) >= {"subnet", "netmask", "broadcast", "vlan", "use_vlan", "router", "ranges", "conduit"}
    assert admin["ranges"]["host"] == {"start": "192.168.124.81", "end": "192.168.124.160"}
    assert set(attributes["networks"]) == {"admin", "bmc", "bmc_vlan", "storage", "public", "nova_floating",
                                           "nova_fixed", "os_sdn"}
    assert check_networks(layout(), CONDUITS) == []


@pytest.mark.parametrize("changes, expected", [
    ({"storage__ranges": {"host": {"start": "192.168.125.10", "end": "192.168.126.5"}}}, "not inside its subnet"),
    ({"storage__ranges": {"host": {"start": "192.168.125.20", "end": "192.168.125.10"}}}, "after its end"),
    ({"storage__ranges": {"a": {"start": "192.168.125.10", "end": "192.168.125.20"},
                          "b": {"start": "192.168.125.20", "end": "192.168.125.30"}}}, "overlap"),
    ({"storage__subnet": "192.168.124.0"}, "networks admin (192.168.124.0/24) and storage"),
    ({"bmc__share_segment_with": []}, "networks admin (192.168.124.0/24) and bmc"),
    ({"bmc__ranges": {"host": {"start": "192.168.124.150", "end": "192.168.124.170"}}},
     "range host of admin (192.168.124.81-192.168.124.160) overlaps range host of bmc"),
    ({"public__router": "192.168.127.1"}, "outside its subnet"),
    ({"public__router": "192.168.126.5"}, "inside its range host"),
    ({"public__router": "192.168.126.255"}, "network or broadcast address"),
    ({"storage__broadcast": "192.168.125.254"}, "is not the broadcast address"),
    ({"storage__subnet": "192.168.125.7"}, "is not a network"),
    ({"storage__ranges": {"host": {"start": "192.168.125.0", "end": "192.168.125.9"}}}, "network or broadcast"),
    ({"storage__conduit": "intf9"}, "conduit 'intf9' is not in the conduit map"),
    ({"storage__use_vlan": True, "storage__vlan": 0}, "vlan from 1 to 4094"),
])
def test_bad_layouts_are_refused_with_the_reason(changes, expected):
    problems = check_networks(layout(**changes), CONDUITS)
    assert any(expected in p for p in problems), problems


def test_conduits_map_logical_interfaces_onto_nics_by_speed_and_order():
    settings = NetworkAttributes()
    two = [Nic("eth1", 1000), Nic("eth0", 1000)]
    single = conduits_of(settings, two)
    assert {k: v.interfaces for k, v in single.items()} == {"intf0": ["eth0"], "intf1": ["eth0"], "intf2": ["eth0"]}
    settings.mode = "team"
    settings.teaming.mode = 4
    team = conduits_of(settings, two)
    assert team["intf0"].interfaces == ["eth0", "eth1"] and team["intf0"].team_mode == 4
    settings.mode = "dual"
    dual = conduits_of(settings, [Nic("eth0", 10000), Nic("eth1", 1000)])
    assert dual["intf0"].interfaces == ["eth1"]  # ?1g1: the 1 Gb NIC
    assert dual["intf1"].interfaces == ["eth0"]  # ?1g2: no second 1 Gb NIC, so the fastest left
    settings.mode = "team"
    missing = conduits_of(settings, [Nic("eth0", 10000)])
    assert missing["intf0"].missing == ["1g1", "1g2"]


def test_conduits_use_the_nics_the_inventory_reports(crowbar, fleet):
    [name] = fleet.add(1, "compute", clients=False)
    crowbar.machines.discover([name])
    machine = crowbar.machines.inventory([name]).get(name)
    nics = nics_of(machine)
    assert [n.name for n in nics] == ["eth0", "eth1"]
    settings = NetworkAttributes(mode="team")
    assert conduits_of(settings, nics)["intf0"].interfaces == ["eth0", "eth1"]


# -- allocation on a real server -----------------------------------------------------------------


def test_a_bad_layout_is_refused_on_save_and_nothing_is_written(crowbar):
    crowbar.proposals.create("network", "default")
    before = crowbar.proposals.get("network", "default").revision
    with pytest.raises(ValidationError, match="outside its subnet"):
        crowbar.proposals.set("network", "default", {"networks.public.router": "10.0.0.1"})
    assert crowbar.proposals.get("network", "default").revision == before


def test_discovery_allocates_admin_and_bmc_keeps_them_and_delete_frees_them(crowbar, fleet, chef):
    commit_network(crowbar)
    physical = fleet.add(3, "compute", clients=False)
    virtual = fleet.add(1, "vm", clients=False)
    fleet.boot(physical + virtual, until="discovered")
    host = ipaddress.ip_address("192.168.124.81"), ipaddress.ip_address("192.168.124.160")
    seen = []
    for name in physical + virtual:
        table = network_entry(chef, name)
        admin = table["admin"]
        assert host[0] <= ipaddress.ip_address(admin["address"]) <= host[1]
        assert {k: admin[k] for k in ("netmask", "broadcast", "subnet", "vlan", "use_vlan", "conduit", "router")} == {
            "netmask": "255.255.255.0", "broadcast": "192.168.124.255", "subnet": "192.168.124.0", "vlan": 100,
            "use_vlan": False, "conduit": "intf0", "router": "192.168.124.1"}
        assert admin["users"] == [DISCOVERY_USER]
        item = chef.data_bags.get_item(ADDRESSES_BAG, item_id("admin", admin["address"]))
        assert item["machine"] == name
        assert ("bmc" in table) == (name in physical)
        seen.append(admin["address"])
    assert len(set(seen)) == 4
    # Idempotent: walking the states again keeps every address.
    crowbar.machines.transition(physical[0], "reset")
    crowbar.machines.transition(physical[0], "discovering")
    assert network_entry(chef, physical[0])["admin"]["address"] == seen[0]
    rows = crowbar.addresses.allocations(network="admin")
    assert sorted(r["address"] for r in rows) == sorted(seen)
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}
    crowbar.machines.transition(physical[1], "delete")
    assert network_entry(chef, physical[1]) == {}
    assert chef.data_bags.find_item(ADDRESSES_BAG, item_id("admin", seen[1])) is None
    assert len(crowbar.addresses.allocations()) == 2 * 3 - 2 + 1


def test_a_commit_allocates_the_networks_its_elements_need_and_deactivate_frees_them(crowbar, fleet, chef):
    commit_network(crowbar)
    names = fleet.ready(3)
    crowbar.proposals.create("storer", "default")
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names[:2])})
    assert crowbar.proposals.commit("storer", "default").status == "applied"
    first = {n: network_entry(chef, n).get("storage") for n in names}
    assert first[names[2]] is None
    for name in names[:2]:
        assert first[name]["users"] == ["storer-default"] and first[name]["vlan"] == 200
        assert ipaddress.ip_address(first[name]["address"]) in ipaddress.ip_network("192.168.125.0/24")
    # Recommit with one more machine: the first two keep their addresses.
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names)})
    crowbar.proposals.commit("storer", "default")
    again = {n: network_entry(chef, n)["storage"]["address"] for n in names}
    assert {n: again[n] for n in names[:2]} == {n: first[n]["address"] for n in names[:2]}
    assert len(set(again.values())) == 3
    # A machine dropped from the proposal gives its address back.
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names[1:])})
    crowbar.proposals.commit("storer", "default")
    assert "storage" not in network_entry(chef, names[0])
    assert chef.data_bags.find_item(ADDRESSES_BAG, item_id("storage", again[names[0]])) is None
    crowbar.proposals.deactivate("storer", "default")
    assert all("storage" not in network_entry(chef, n) for n in names)
    assert crowbar.addresses.allocations(network="storage") == []


@pytest.mark.parametrize("count", [3, 40])  # read directly (the careful pass), and by search (speculative)
def test_a_commits_addresses_ride_on_its_own_role_writes(count, crowbar, fleet, chef):
    commit_network(crowbar)
    names = fleet.ready(count)
    crowbar.proposals.create("storer", "default")
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names)})
    before = chef.stats.snapshot()["by_endpoint"]
    assert crowbar.proposals.commit("storer", "default").status == "applied"
    after = chef.stats.snapshot()["by_endpoint"]
    # Each machine's role written once: run list and address in one PUT.
    assert after.get("PUT /roles/*", 0) - before.get("PUT /roles/*", 0) == count
    addresses = {n: network_entry(chef, n)["storage"]["address"] for n in names}
    assert len(set(addresses.values())) == count
    assert {r["address"]: r["machine"] for r in crowbar.addresses.items("storage")} == \
        {a: n for n, a in addresses.items()}
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}


def storage_items(crowbar):
    return {r["address"]: r["machine"] for r in crowbar.addresses.items("storage")}


@pytest.mark.production_personality(False)  # the snapshot's lag is replayed by hand, for certain
def test_addresses_claimed_ahead_of_a_lagging_snapshot_are_freed_where_the_role_had_one(
        crowbar, fleet, chef, monkeypatch):
    # A speculative commit claims new addresses before reading the roles, for the machines its
    # search snapshot shows without one; a snapshot behind the roles names too few.
    commit_network(crowbar)
    names = fleet.ready(6)
    lagging = crowbar.machines.cluster()
    early = crowbar.addresses.allocate("storage", names[:3], user="storer-default").allocated
    assert sorted(early) == sorted(names[:3])
    crowbar.proposals.create("storer", "default")
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names)})
    monkeypatch.setattr(crowbar.machines.reader, "view", lambda names=None: lagging)
    monkeypatch.setattr(committer, "DIRECT_READ_LIMIT", 0)  # the snapshot path, as with many machines
    assert crowbar.proposals.commit("storer", "default").status == "applied"
    addresses = {n: network_entry(chef, n)["storage"]["address"] for n in names}
    assert {n: addresses[n] for n in names[:3]} == early  # kept what they had
    assert len(set(addresses.values())) == 6
    assert storage_items(crowbar) == {a: n for n, a in addresses.items()}  # no claim left over
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}


@pytest.mark.production_personality(False)
def test_a_refused_speculative_commit_frees_every_address_it_claimed_ahead(crowbar, fleet, chef, monkeypatch):
    commit_network(crowbar)
    names = fleet.ready(6)
    lagging = crowbar.machines.cluster()
    role = chef.roles.get(node_role_name(names[4]))  # edited by hand after the snapshot: drift
    role["run_list"].append("recipe[hand::made]")
    chef.roles.update(role["name"], role)
    crowbar.proposals.create("storer", "default")
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names)})
    before = {n: chef.roles.get(node_role_name(n)) for n in names}
    monkeypatch.setattr(crowbar.machines.reader, "view", lambda names=None: lagging)
    monkeypatch.setattr(committer, "DIRECT_READ_LIMIT", 0)
    with pytest.raises(DriftError):
        crowbar.proposals.commit("storer", "default")
    assert storage_items(crowbar) == {}  # claimed ahead (and some written), all freed
    assert {n: chef.roles.get(node_role_name(n)) for n in names} == before
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}
    assert crowbar.locks.all() == []


def test_the_cli_shows_and_frees_allocations_as_json(crowbar, fleet, chef, crowbar_cli):
    assert crowbar_cli("network", "proposal", "create", "default")[0] == 0
    shown = crowbar_cli.json("network", "proposal", "show", "default")
    assert shown["attributes"]["network"]["networks"]["admin"]["subnet"] == "192.168.124.0"
    assert crowbar_cli("network", "proposal", "edit", "default",
                       "--set", "networks.admin.ranges.host.end=192.168.124.90")[0] == 0
    assert crowbar_cli("network", "proposal", "commit", "default")[0] == 0
    names = fleet.add(2, "compute", clients=False)
    fleet.boot(names, until="discovered")
    rows = crowbar_cli.json("network", "allocations", "--network", "admin")
    assert sorted(r["machine"] for r in rows) == sorted(names)
    assert all(81 <= int(r["address"].rsplit(".", 1)[1]) <= 90 for r in rows)
    mine = crowbar_cli.json("network", "allocations", "--machine", names[0])
    assert sorted(r["network"] for r in mine) == ["admin", "bmc"]
    freed = crowbar_cli.json("network", "free", names[0], "bmc")
    assert freed == {"machine": names[0], "network": "bmc", "freed": True}
    assert [r["network"] for r in crowbar_cli.json("network", "allocations", "--machine", names[0])] == ["admin"]
    code, _, err = crowbar_cli("network", "free", "no-such-machine.example.com", "bmc")
    assert code == 1 and err.startswith("error: no machine") and "\n" not in err.strip()
    assert crowbar_cli.json("network", "check") == {"orphans": [], "duplicates": [], "missing": []}


# -- 200 machines, 4 processes ---------------------------------------------------------------------


def discover_in_four_processes(chef_server, names):
    env = {**os.environ, **chef_server.server.environment(), "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 3.0
    workers = [subprocess.Popen([sys.executable, "-m", "tests.support.network_worker", str(start_at), *names[i::4]],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(4)]
    states: dict[str, str] = {}
    for worker in workers:
        out, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err
        states.update(json.loads(out))
    return states


def admin_allocations(crowbar, chef, names):
    """machine -> admin address from the roles, and the items (address -> machine)."""
    by_role = {n: (network_entry(chef, n).get("admin") or {}).get("address") for n in names}
    items = {r["address"]: r["machine"] for r in crowbar.addresses.items("admin")}
    return by_role, items


def test_200_machines_discovered_at_once_by_4_processes_get_distinct_admin_addresses(
        chef_server, crowbar, fleet, chef):
    commit_network(crowbar, **{"networks.admin.ranges.host.start": "192.168.124.21",
                               "networks.admin.ranges.host.end": "192.168.124.230",
                               "networks.admin.ranges.dhcp.start": "192.168.124.12",
                               "networks.admin.ranges.dhcp.end": "192.168.124.20",
                               "networks.bmc.subnet": "192.168.200.0",
                               "networks.bmc.broadcast": "192.168.200.255",
                               "networks.bmc.share_segment_with": "[]",
                               "networks.bmc.ranges.host.start": "192.168.200.10",
                               "networks.bmc.ranges.host.end": "192.168.200.250",
                               "networks.bmc_vlan.subnet": "192.168.201.0",
                               "networks.bmc_vlan.broadcast": "192.168.201.255",
                               "networks.bmc_vlan.share_segment_with": "[]",
                               "networks.bmc_vlan.ranges.host.start": "192.168.201.10",
                               "networks.bmc_vlan.ranges.host.end": "192.168.201.10"})
    names = fleet.add(200, "compute", clients=False)
    states = discover_in_four_processes(chef_server, names)
    assert Counter(states.values()) == {"discovered": 200}
    by_role, items = admin_allocations(crowbar, chef, names)
    assert all(by_role.values())
    assert len(set(by_role.values())) == 200
    low, high = ipaddress.ip_address("192.168.124.21"), ipaddress.ip_address("192.168.124.230")
    assert all(low <= ipaddress.ip_address(a) <= high for a in by_role.values())
    assert items == {a: n for n, a in by_role.items()}  # one item per address, naming its machine
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}


def test_a_range_smaller_than_the_machines_names_those_left_without_and_doubles_none(
        chef_server, crowbar, fleet, chef):
    commit_network(crowbar, **{"networks.admin.ranges.host.end": "192.168.124.140"})  # 60 addresses
    names = fleet.add(200, "vm", clients=False)  # virtual: admin only
    states = discover_in_four_processes(chef_server, names)
    by_role, items = admin_allocations(crowbar, chef, names)
    given = {n: a for n, a in by_role.items() if a}
    assert len(given) == 60 and len(set(given.values())) == 60
    assert items == {a: n for n, a in given.items()}
    left = sorted(set(names) - set(given))
    assert len(left) == 140
    for name in left:
        record = crowbar.machines.record(name)
        assert states[name] == "problem" and record.state == "problem"
        problem = chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]["problem"]["reason"]
        assert problem == ("network: no admin address: range host of network admin "
                           "(192.168.124.81-192.168.124.140, 60 addresses) is full"), problem
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}


# -- renumbering -------------------------------------------------------------------------------------


def test_renumbering_a_50_machine_storage_range_lists_every_change_then_applies_it(crowbar, fleet, chef, crowbar_cli):
    commit_network(crowbar)
    names = fleet.add(50, "vm", clients=False)
    crowbar.machines.discover(names)
    assert len(crowbar.addresses.allocate("storage", names, user="storer-default").allocated) == 50
    before = {n: network_entry(chef, n)["storage"]["address"] for n in names}
    crowbar.proposals.set("network", "default", {
        "networks.storage.subnet": "192.168.135.0", "networks.storage.broadcast": "192.168.135.255",
        "networks.storage.ranges.host.start": "192.168.135.10", "networks.storage.ranges.host.end": "192.168.135.239"})
    plan = crowbar_cli.json("network", "renumber", "--dry-run")
    assert {p["machine"]: p["old"] for p in plan} == before  # every change listed, and only storage
    new_subnet = ipaddress.ip_network("192.168.135.0/24")
    assert len({p["new"] for p in plan}) == 50 and all(ipaddress.ip_address(p["new"]) in new_subnet for p in plan)
    assert {n: network_entry(chef, n)["storage"]["address"] for n in names} == before  # a dry run writes nothing

    # Every write of such a commit is replayed one by one in tests/test_network_renumber.py.
    assert crowbar.proposals.commit("network", "default").status == "applied"
    after = {n: network_entry(chef, n)["storage"] for n in names}
    assert {n: e["address"] for n, e in after.items()} == {p["machine"]: p["new"] for p in plan}  # as listed
    for name, entry in after.items():
        assert ipaddress.ip_address(entry["address"]) in new_subnet and entry["subnet"] == "192.168.135.0"
        assert entry["users"] == ["storer-default"]
    assert {r["address"]: r["machine"] for r in crowbar.addresses.items("storage")} == \
        {e["address"]: n for n, e in after.items()}
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}
    assert crowbar_cli.json("network", "renumber", "--dry-run") == []


def test_an_interrupted_allocation_leaves_an_idle_item_that_check_repairs(crowbar, fleet, chef, crowbar_cli):
    commit_network(crowbar, **{"networks.storage.ranges.host.end": "192.168.125.11"})  # two addresses
    [first, second] = fleet.add(2, "vm", clients=False)
    crowbar.machines.discover([first, second])
    # Killed after the create, before the role write: the item exists, no role names it.
    chef.data_bags.create_item(ADDRESSES_BAG, {"id": item_id("storage", "192.168.125.10"), "network": "storage",
                                               "address": "192.168.125.10", "machine": first, "at": "now"})
    report = crowbar.addresses.allocate("storage", [second], user="test")
    assert report.allocated == {second: "192.168.125.11"}  # never the claimed one
    assert crowbar.addresses.allocate("storage", [first], user="test").refused  # full, nothing doubled
    found = crowbar.addresses.check()
    assert [(r["machine"], r["address"]) for r in found["orphans"]] == [(first, "192.168.125.10")]
    assert crowbar_cli("network", "check")[0] == 1
    assert crowbar_cli.json("network", "check", "--repair") == {"orphans": [], "duplicates": [], "missing": []}
    assert crowbar.addresses.allocate("storage", [first], user="test").allocated == {first: "192.168.125.10"}
    # Freeing: the role lets go first, then the item.
    assert crowbar.addresses.release([first, second], networks=["storage"]) == {first: ["storage"],
                                                                                second: ["storage"]}
    assert crowbar.addresses.allocations(network="storage") == []


def test_after_a_crashed_allocators_lock_is_taken_over_its_claimed_address_is_adopted(crowbar, fleet, chef):
    from barclamp_sdk.model.naming import LOCKS_BAG, machine_lock_name, machine_shard

    commit_network(crowbar, **{"networks.storage.ranges.host.end": "192.168.125.11"})  # two addresses
    [machine] = fleet.add(1, "vm", clients=False)
    crowbar.machines.discover([machine])
    # A crashed allocator: its create came through, its role write did not, its shard lock is left.
    chef.data_bags.create_item(ADDRESSES_BAG, {"id": item_id("storage", "192.168.125.10"), "network": "storage",
                                               "address": "192.168.125.10", "machine": machine, "at": "now"})
    now = time.time()
    chef.data_bags.ensure(LOCKS_BAG)
    chef.data_bags.create_item(LOCKS_BAG, {
        "id": machine_lock_name(machine_shard(machine)), "token": "0" * 32, "owner": "crashed-host:4242:1",
        "purpose": "allocate storage addresses", "lease": 30.0, "acquired_at": now - 90, "expires_at": now - 60,
        "details": {}})
    report = crowbar.addresses.allocate("storage", [machine], user="test")
    assert report.allocated == {machine: "192.168.125.10"}  # the claimed one, not a second
    assert [r["address"] for r in crowbar.addresses.items("storage")] == ["192.168.125.10"]
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}


def test_a_virtual_address_is_found_by_name_and_never_a_machines(crowbar, fleet, chef):
    commit_network(crowbar)
    names = fleet.add(2, "vm", clients=False)
    crowbar.machines.discover(names)
    crowbar.addresses.allocate("public", names, user="test")
    vip = crowbar.addresses.vip("public", "keystone")
    assert crowbar.addresses.vip("public", "keystone") == vip
    assert crowbar.addresses.vip("public", "glance") != vip
    machines = {network_entry(chef, n)["public"]["address"] for n in names}
    assert vip not in machines
    assert {r["address"]: r["machine"] for r in crowbar.addresses.items("public")}[vip] == "vip:keystone"
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}
