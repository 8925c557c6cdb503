"""ceph, swift and nova on the networks of the network proposal; bios reaching BMCs only at bmc allocations."""

from __future__ import annotations

import ipaddress
import json

import pytest

from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.testing.bmcpeers import BmcLab

STORAGE = ipaddress.ip_network("192.168.125.0/24")


def table(chef, machine):
    return chef.roles.get(node_role_name(machine))["default_attributes"]["crowbar"].get("network", {})


def test_ceph_swift_and_nova_committed_with_the_network_proposal_carry_its_networks(crowbar, fleet, chef):
    crowbar.proposals.create("network", "default")
    assert crowbar.proposals.commit("network", "default").status == "applied"
    storage = fleet.ready(4, "storage")
    compute = fleet.ready(3, "compute")
    nova = crowbar.proposals.create("nova", "default")
    assert crowbar.proposals.commit("nova", "default").status == "applied"
    ceph = crowbar.proposals.create("ceph", "default")
    keep = storage[:2]
    crowbar.proposals.set("ceph", "default", {
        "elements.ceph-osd": ",".join(keep), "pool_size": "2",
        "osd_devices": json.dumps({n: d for n, d in ceph.attributes["osd_devices"].items() if n in keep})})
    assert crowbar.proposals.commit("ceph", "default").status == "applied"
    swift = crowbar.proposals.create("swift", "default")
    assert crowbar.proposals.commit("swift", "default").status == "applied"

    config = chef.roles.get("ceph-config-default")["default_attributes"]["ceph"]["config"]
    assert config["public-network"] == config["cluster-network"] == "192.168.125.0/24"
    ceph = crowbar.proposals.get("ceph", "default")
    swift = crowbar.proposals.get("swift", "default")
    nova = crowbar.proposals.get("nova", "default")
    users: dict[str, set[str]] = {}
    for element in ("ceph-mon", "ceph-osd"):
        for name in ceph.elements[element]:
            users.setdefault(name, set()).add("ceph-default")
    for element in ("swift-storage", "swift-proxy"):
        for name in swift.elements[element]:
            users.setdefault(name, set()).add("swift-default")
    addresses = []
    for name in storage + compute:
        entry = table(chef, name).get("storage")
        if name not in users:
            assert entry is None, name
            continue
        assert set(entry["users"]) == users[name], name
        assert ipaddress.ip_address(entry["address"]) in STORAGE and entry["vlan"] == 200 and entry["use_vlan"]
        addresses.append(entry["address"])
    assert len(addresses) == len(set(addresses)) == len(users)
    for name in swift.elements["swift-proxy"]:
        assert table(chef, name)["public"]["router"] == "192.168.126.1"
    [controller] = nova.elements["nova-multi-controller"]
    assert {"public", "nova_fixed"} <= set(table(chef, controller))
    for name in nova.elements["nova-multi-compute-kvm"]:
        fixed = table(chef, name)["nova_fixed"]
        assert 2 <= int(fixed["address"].rsplit(".", 1)[1]) <= 49 and fixed["vlan"] == 500
    nova_config = chef.roles.get("nova-config-default")["default_attributes"]["nova"]["network"]
    assert nova_config["manager"] == "flatdhcp"  # derived as Crowbar did: DHCP, no tenant VLANs
    assert crowbar.addresses.check() == {"orphans": [], "duplicates": [], "missing": []}
    # ceph goes: its machines keep storage addresses only where swift still needs them.
    crowbar.proposals.deactivate("ceph", "default")
    for name in storage + compute:
        entry = table(chef, name).get("storage")
        assert (entry is not None) == ("swift-default" in users.get(name, set())), name


@pytest.fixture
def lab(tmp_path):
    names = [f"bmc{i}.example.com" for i in range(2)]
    with BmcLab(tmp_path / "bmcs", names) as running:
        yield running


def test_bios_reaches_a_bmc_only_at_its_bmc_allocation(crowbar, fleet, chef, lab, crowbar_cli):
    crowbar.proposals.create("network", "default")
    crowbar.proposals.set("network", "default", {  # the lab's BMCs listen on 127.0.0.1
        "networks.bmc.subnet": "127.0.0.0", "networks.bmc.broadcast": "127.0.0.255",
        "networks.bmc.ranges.host.start": "127.0.0.1", "networks.bmc.ranges.host.end": "127.0.0.2"})
    assert crowbar.proposals.commit("network", "default").status == "applied"
    fleet.add(2, "compute", names=lab.names, wall=lambda n, i: lab.wall(n))
    fleet.boot(lab.names, until="discovered")
    allocated = {n: table(chef, n)["bmc"]["address"] for n in lab.names}
    assert sorted(allocated.values()) == ["127.0.0.1", "127.0.0.2"]
    at_lab = next(n for n, a in allocated.items() if a == "127.0.0.1")
    elsewhere = next(n for n in lab.names if n != at_lab)
    for name in lab.names:  # the operator confirms what each node reports: 127.0.0.1
        crowbar.machines.bmc.confirm(name)
    code, _, err = crowbar_cli("bios", "proposal", "create", "default", "--set", "bmc_username=admin",
                               "--set", "bmc_password=password")
    assert code == 0, err
    assert crowbar_cli("bios", "proposal", "commit", "default")[0] == 0
    code, out, err = crowbar_cli("bios", "apply", *lab.names, "--json")
    results = {r["machine"]: r for r in json.loads(out)}
    assert results[at_lab]["status"] == "applied", results
    assert results[elsewhere]["status"] == "skipped"
    assert "is not its bmc allocation (127.0.0.2)" in results[elsewhere]["reason"]
    assert lab.ipmi[at_lab].boot_device == "pxe" and lab.ipmi[elsewhere].boot_device == "default"
