"""Hostile network layouts and commands: one clear line, nothing written, never a traceback."""

from __future__ import annotations

import ipaddress
import json
import zlib
from pathlib import Path

import pytest

from barclamp_sdk.model.addresses import NetworkSpec
from barclamp_sdk.testing.snapshot import server_snapshot

def _edit(cli, *pairs, expect):
    return cli("network", "proposal", "edit", "default", *[a for p in pairs for a in ("--set", p)], expect=expect)


@pytest.mark.parametrize("pairs, says", [
    # Each crashed with a TypeError or ValueError (mixed IPv4/IPv6 comparisons, an
    # unparsed router on a shared segment, a conduit pattern that is no regex).
    (["networks.storage.ranges.host.start=fd00::10", "networks.storage.ranges.host.end=fd00::20"], "is not IPv4"),
    (["networks.storage.router=fd00::1"], "storage"),
    (["networks.storage.router=x", "networks.storage.share_segment_with=[\"admin\"]"], "router 'x' is not an address"),
])
def test_hostile_layouts_are_refused_in_one_line_and_write_nothing(cli, chef, pairs, says):
    cli("network", "proposal", "create", "default")
    before = server_snapshot(chef)
    _, err = _edit(cli, *pairs, expect=1)
    assert says in err and "Traceback" not in err, err
    assert server_snapshot(chef) == before


def test_a_conduit_pattern_that_is_no_regular_expression_is_refused(crowbar, chef):
    crowbar.proposals.create("network", "default")
    document = crowbar.proposals.get("network", "default")
    data = document.data
    data["attributes"]["network"]["conduit_map"][0]["pattern"] = "team/("
    before = server_snapshot(chef)
    with pytest.raises(Exception) as caught:
        crowbar.proposals.replace("network", "default", data)
    assert "is not a regular expression" in str(caught.value)
    assert server_snapshot(chef) == before


def test_freeing_an_address_on_a_network_nobody_committed_says_so(cli, fleet):
    """It printed "had no nosuchnet address: nothing to do" and exited 0."""
    name = fleet.ready(1, "compute")[0]
    _, err = cli("network", "free", name, "nosuchnet", expect=1)
    assert "no network 'nosuchnet'" in err and "Traceback" not in err, err


# -- NICs: what Ohai says they are ---------------------------------------------------------------------

OHAI = Path(__file__).parent / "data" / "ohai"


def _ohai16(driver: str, bus: str, speed: int | None = None, kind: str | None = None) -> dict:
    """One interface as Ohai 16 reports it with ethtool present (``driver_info``, ``link_speed``)."""
    info = {"encapsulation": "Ethernet", "driver_info": {"driver": driver, "bus_info": bus},
            "addresses": {f"52:54:00:{zlib.crc32((driver + bus).encode()) % 256:02x}:01:02": {"family": "lladdr"}}}
    if kind:
        info["type"] = kind
    if speed is not None:
        info["link_speed"] = speed
    return info


#: A hypervisor: two 10 Gb NICs bonded and bridged, a 1 Gb one, one with no link; and the virtual kinds.
HYPERVISOR = {
    "eno1": _ohai16("ixgbe", "0000:61:00.0", 10000, "eno"), "eno2": _ohai16("ixgbe", "0000:61:00.1", 10000, "eno"),
    "eno3": _ohai16("e1000e", "0000:00:19.0", 1000, "eno"), "eno4": _ohai16("igb", "0000:02:00.0", 0, "eno"),
    "bond0": _ohai16("bonding", "", 20000, "bond"), "br0": _ohai16("bridge", "N/A", None, "br"),
    "bond0.100": _ohai16("802.1Q VLAN Support", "", 20000), "veth9f2a1b": _ohai16("veth", "", 10000, "veth"),
    "docker0": _ohai16("bridge", "N/A", None, "docker"), "tap0": _ohai16("tun", "tap", 10, "tap"),
    "ifb0": _ohai16("ifb", "", None, "ifb"), "virbr0": _ohai16("bridge", "N/A", None, "virbr"),
}


def _node(chef, name, interfaces):
    chef.nodes.create({"name": name, "chef_type": "node", "json_class": "Chef::Node", "chef_environment": "_default",
                       "run_list": [], "default": {}, "override": {}, "normal": {},
                       "automatic": {"fqdn": name, "platform": "debian", "platform_version": "12",
                                     "network": {"interfaces": interfaces}}})
    return name


def test_virtual_interfaces_are_no_nics_and_ohais_link_speed_counts(crowbar, chef):
    # Before: ifb0/ifb1 of a real Debian machine (Ohai 16, no ethtool), and the bond, bridges,
    # VLAN, veth and tap of a hypervisor, were NICs; every NIC was 1 Gb.
    from barclamps.network import NetworkAttributes, conduits_of, nics_of

    debian = _node(chef, "debian.example.com",
                   json.loads((OHAI / "debian-ohai16-ifb-interfaces.json").read_text()))
    hyper = _node(chef, "hyper.example.com", HYPERVISOR)
    crowbar.machines.discover([debian, hyper])
    inventory = crowbar.machines.inventory([debian, hyper])
    assert [(n.name, n.speed) for n in nics_of(inventory.get(debian))] == [("eth0", 1000)]
    nics = nics_of(inventory.get(hyper))
    assert [(n.name, n.speed) for n in nics] == [("eno1", 10000), ("eno2", 10000), ("eno3", 1000), ("eno4", 1000)]
    settings = NetworkAttributes(mode="team", conduit_map=[{"pattern": "team/.*/.*", "conduit_list": {
        "intf0": {"if_list": ["?10g1", "?10g2"]}, "intf1": {"if_list": ["1g1"]}, "intf2": {"if_list": ["10g3"]}}}])
    conduits = conduits_of(settings, nics)
    assert conduits["intf0"].interfaces == ["eno1", "eno2"] and conduits["intf0"].team_mode == 5
    assert conduits["intf1"].interfaces == ["eno3"]
    assert conduits["intf2"].missing == ["10g3"]  # two 10 Gb NICs only: the bond is none


# -- a range of 16 million addresses -------------------------------------------------------------------

BIG = {"networks.storage.subnet": "10.0.0.0", "networks.storage.netmask": "255.0.0.0",
       "networks.storage.broadcast": "10.255.255.255", "networks.storage.ranges.host.start": "10.0.0.1",
       "networks.storage.ranges.host.end": "10.255.255.254"}


def test_a_range_of_16_million_addresses_is_never_listed_in_memory(crowbar, fleet, chef):
    # Before: allocating one address listed all 16,777,214 as strings (over 1 GB), and so did a dry run.
    import tracemalloc

    crowbar.proposals.create("network", "default")
    crowbar.proposals.set("network", "default", BIG)
    assert crowbar.proposals.commit("network", "default").status == "applied"
    names = fleet.add(2, "vm", clients=False)
    crowbar.machines.discover(names)
    tracemalloc.start()
    try:
        report = crowbar.addresses.allocate("storage", names, user="test")
        start = max(ipaddress.ip_address(a) for a in report.allocated.values()) + 1  # both move above
        crowbar.proposals.set("network", "default", {"networks.storage.ranges.host.start": str(start)})
        edited = crowbar.proposals.get("network", "default").attributes["networks"]["storage"]
        plan = crowbar.addresses.renumber_plan("storage", NetworkSpec.parse("storage", edited))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"allocation and dry run on a /8 range: {peak / 1024 / 1024:.1f} MiB at the peak")
    assert sorted(report.allocated) == names and len(set(report.allocated.values())) == 2
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.0.0.0/8") for a in report.allocated.values())
    assert sorted(p["machine"] for p in plan) == names
    assert sorted(p["new"] for p in plan) == sorted([str(start), str(start + 1)])  # the first free ones
    assert peak < 20 * 1024 * 1024, f"{peak / 1024 / 1024:.0f} MiB at the peak"
