"""Machines: discovery, the per-node role, states, allocation, inventory."""

from __future__ import annotations

import pytest

from barclamp_sdk.errors import InvalidTransition, NotFoundError, ValidationError
from barclamp_sdk.model.cluster import record_from_role
from barclamp_sdk.model.inventory import disk_of, machine_from_search, parse_size
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.noderoles import crowbar_data
from barclamp_sdk.model.states import LIFECYCLE
from barclamp_sdk.testing import wait_indexed


def test_role_name_replaces_every_dot_and_nothing_else():
    assert node_role_name("d52-54-00.example.com") == "crowbar-d52-54-00_example_com"
    assert node_role_name("a_b.c-d") == "crowbar-a_b_c-d"


def test_discovery_creates_the_role_and_adds_it_to_the_node_run_list(crowbar, fleet, chef):
    [name] = fleet.add(1, "compute")
    node_before = chef.nodes.get(name)
    crowbar.machines.transition(name, "discovering")
    role = chef.roles.get(node_role_name(name))
    data = role["default_attributes"]["crowbar"]
    assert data["node"] == name and data["state"] == "discovering" and data["allocated"] is False
    node_after = chef.nodes.get(name)
    assert node_after["run_list"] == [f"role[{node_role_name(name)}]"]
    # The run-list entry is the only change made to the node.
    node_before["run_list"] = node_after["run_list"]
    assert node_after == node_before


def test_discovering_an_unknown_node_says_to_run_chef_client(crowbar):
    with pytest.raises(NotFoundError, match="run chef-client"):
        crowbar.machines.transition("ghost.example.com", "discovering")


def test_boot_pauses_after_discovery_until_allocated(crowbar, fleet):
    names = fleet.add(2, "compute")
    assert set(fleet.boot(names).values()) == {"discovered"}
    with pytest.raises(InvalidTransition, match="waiting for allocation.*crowbar machines allocate"):
        crowbar.machines.transition(names[0], "hardware-installing")
    assert crowbar.machines.allocate([names[0]]) == [names[0]]
    assert crowbar.machines.allocate([names[0]]) == []  # already allocated: no write
    states = fleet.boot(names)
    assert states == {names[0]: "ready", names[1]: "discovered"}


def test_impossible_transition_is_a_clear_error(crowbar, fleet):
    [name] = fleet.add(1, "compute")
    crowbar.machines.transition(name, "discovering")
    with pytest.raises(InvalidTransition) as info:
        crowbar.machines.transition(name, "ready")
    assert "cannot go from discovering to ready" in str(info.value)
    assert "allowed next: " in str(info.value) and "discovered" in str(info.value)
    with pytest.raises(ValidationError, match="unknown state 'bogus'; known states"):
        crowbar.machines.transition(name, "bogus")
    assert crowbar.machines.state(name) == "discovering"


def test_states_walk_the_whole_lifecycle_and_problem_recovers(crowbar, fleet, chef):
    [name] = fleet.add(1, "compute")
    crowbar.machines.transition(name, "discovering")
    crowbar.machines.allocate([name])
    for state in LIFECYCLE[1:]:
        crowbar.machines.transition(name, state)
    assert crowbar.machines.state(name) == "ready"
    record = crowbar.machines.set_problem(name, "disk sdb failed")
    assert record.state == "problem"
    assert crowbar_data(chef.roles.get(node_role_name(name)))["problem"]["reason"] == "disk sdb failed"
    crowbar.machines.transition(name, "readying")
    crowbar.machines.transition(name, "ready")
    assert "problem" not in crowbar_data(chef.roles.get(node_role_name(name)))


def test_unknown_machines_cannot_be_allocated_and_nothing_is_written(crowbar, fleet, chef):
    names = fleet.add(2, "compute")
    crowbar.machines.discover(names)
    before = chef.stats.snapshot()["writes"]
    with pytest.raises(NotFoundError, match="no machine 'nope.example.com'"):
        crowbar.machines.allocate([names[0], "nope.example.com"])
    assert chef.stats.snapshot()["writes"] == before
    assert not crowbar.machines.record(names[0]).allocated


@pytest.mark.parametrize("bad", ["", "a:b", "has space", "x" * 300, "ünï.example.com", "semi;colon"])
def test_node_names_a_role_cannot_hold_are_refused(crowbar, bad):
    with pytest.raises(ValidationError):
        crowbar.machines.transition(bad, "discovering")


def test_inventory_is_typed_from_ohai_with_partial_search(crowbar, fleet, chef):
    compute = fleet.add(1, "compute", wall={"rack": "r1", "bmc": {"address": "10.9.0.1", "ipmi_port": 9623}})
    storage = fleet.add(1, "storage")
    vm = fleet.add(1, "vm")
    names = crowbar.machines.discover()
    # Right after discovery (search may not show the machines yet) every machine is there:
    assert set(crowbar.machines.inventory().names()) == set(names)
    # Once search has caught up, an inventory is read by partial search alone.
    wait_indexed(chef, "role", [node_role_name(n) for n in names])
    wait_indexed(chef, "node", names)
    before = chef.stats.snapshot()
    inventory = crowbar.machines.inventory()
    after = chef.stats.snapshot()
    endpoints = {k: after["by_endpoint"].get(k, 0) - before["by_endpoint"].get(k, 0) for k in after["by_endpoint"]}
    assert endpoints.get("GET /nodes/*", 0) == endpoints.get("GET /roles/*", 0) == 0  # no object reads
    # one search of roles, one of nodes, and the two object lists that say whether search is complete
    assert after["reads"] - before["reads"] == 4 and endpoints["GET /roles"] == endpoints["GET /nodes"] == 1
    c, s, v = inventory.get(compute[0]), inventory.get(storage[0]), inventory.get(vm[0])
    assert c.cpu_count == 32 and c.cpu_sockets == 2 and c.can_virtualize and not c.is_virtual
    assert c.memory_gb == 384.0 and len(c.disks) == 6 and c.disks[0].os_disk
    assert [d.name for d in c.data_disks] == ["sdb", "sdc", "sdd", "sde", "sdf"]
    assert c.bmc.address == "10.9.0.1" and c.bmc.ipmi_port == 9623 and c.rack == "r1"
    assert c.manufacturer == "Dell Inc." and c.product == "PowerEdge R640"
    assert c.interfaces[0].mac and c.interfaces[0].ipv4
    assert s.storage_heavy and len(s.data_disks) == 11 and not c.storage_heavy
    assert v.is_virtual and not v.can_virtualize and v.bmc is None
    assert c.state == "discovering" and not c.allocated


def test_inventory_tolerates_odd_ohai_shapes():
    odd = machine_from_search(
        {"name": "odd", "cpu_total": "lots", "cpu_flags": "vmx", "memory_total": None,
         "block_device": {"loop0": {"size": "8"}, "sda": "not a dict", "xvda": {"size": "x", "removable": 1}},
         "filesystem": {"by_mountpoint": {"/": {"devices": ["/dev/mapper/root"]}}},
         "interfaces": ["eth0"], "dmi_system": "?", "virtualization": None, "crowbar_wall": {"bmc": {}}},
        record_from_role({"name": "crowbar-odd", "default_attributes": {
            "crowbar": {"node": "odd", "state": 5, "claimed_disks": [], "run_list_map": "x", "pending": "y"}}}),
    )
    assert odd.cpu_count == 0 and odd.cpu_flags == frozenset() and odd.memory_bytes == 0
    assert [d.name for d in odd.disks] == ["sda", "xvda"]
    assert odd.disks[0].os_disk and odd.bmc is None and odd.interfaces == ()
    empty = machine_from_search({"name": "bare"}, None)
    assert empty.disks == () and empty.state == "" and not empty.can_virtualize


def test_size_and_partition_helpers():
    assert parse_size("16384000kB") == 16384000 * 1024
    assert parse_size("2 GB") == 2 * 1024**3 and parse_size("junk") == 0
    assert disk_of("/dev/sda1") == "sda" and disk_of("nvme0n1p2") == "nvme0n1" and disk_of("vdb") == "vdb"


def test_chef_client_run_expands_nested_roles(crowbar, fleet, chef):
    [name] = fleet.add(1, "compute")
    crowbar.machines.discover([name])
    chef.roles.create({"name": "base", "run_list": ["recipe[ntp]"], "default_attributes": {"ntp": {"server": "a"}}})
    chef.roles.create({"name": "web", "run_list": ["role[base]", "recipe[nginx]"],
                       "default_attributes": {"ntp": {"server": "b"}}, "override_attributes": {"port": 80}})
    role = chef.roles.get(node_role_name(name))
    role["run_list"] = ["role[web]"]
    chef.roles.update(role["name"], role)
    node = fleet.converge(name)
    assert node["automatic"]["roles"] == [node_role_name(name), "web", "base"]
    assert node["automatic"]["recipes"] == ["ntp", "nginx"]
    assert node["default"]["ntp"]["server"] == "a"  # the later role wins, as in Chef
    assert node["override"]["port"] == 80
    assert chef.nodes.get(name)["automatic"]["recipes"] == ["ntp", "nginx"]


def test_machine_show_has_facts_role_and_run_lists(crowbar, fleet):
    [name] = fleet.add(1, "storage")
    crowbar.machines.discover([name])
    shown = crowbar.machines.show(name)
    assert shown["role"] == node_role_name(name) and shown["state"] == "discovering"
    assert shown["node_run_list"] == [f"role[{node_role_name(name)}]"]
    assert shown["facts"]["product"] == "PowerEdge R740xd2"
