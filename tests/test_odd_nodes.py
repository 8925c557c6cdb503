"""Real-world node shapes, written here: non-Linux platforms, VMs known by DMI
only, no disks, no free disk, no BMC, a Crowbar 1.x role; on the real server."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barclamp_sdk import Element
from barclamp_sdk.model.crowbar1x import is_crowbar1x_role
from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.inventory import machine_from_search
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.platforms import LINUX, classify_virtualization, os_of, version_matches

BARCLAMPS = ("nova", "ceph", "swift", "eqlx", "bios")
GB_SECTORS = 1000**3 // 512


def facts(name: str, *, platform: str = "ubuntu", version: str = "22.04", os: str | None = None,
          family: str | None = None, disks: dict[str, int] | None = None, dmi: dict[str, str] | None = None,
          virtualization: dict[str, Any] | None = None, cloud: dict[str, Any] | None = None,
          memory_gb: int = 64, vmx: bool = True, index: int = 1) -> dict[str, Any]:
    """Ohai-shaped automatic attributes of one machine (only what matters here)."""
    disks = {"sda": 480, "sdb": 2000, "sdc": 2000} if disks is None else disks
    automatic: dict[str, Any] = {
        "fqdn": name, "hostname": name.split(".")[0], "ipaddress": f"10.9.0.{index}",
        "platform": platform, "platform_version": version,
        "cpu": {"total": 16, "real": 2, "0": {"flags": ["sse2", "vmx"] if vmx else ["sse2"]}},
        "memory": {"total": f"{memory_gb * 1024 * 1024}kB"},
        "block_device": {d: {"size": str(gb * GB_SECTORS), "removable": "0", "rotational": "1"}
                         for d, gb in disks.items()},
        "filesystem": {"by_mountpoint": {"/": {"devices": [f"/dev/{sorted(disks)[0]}1"]}}} if disks else {},
        "network": {"interfaces": {"eth0": {"addresses": {f"52:54:00:09:00:{index:02x}": {"family": "lladdr"},
                                                          f"10.9.0.{index}": {"family": "inet"}}}}},
        "dmi": {"system": dmi or {"manufacturer": "Dell Inc.", "product_name": "PowerEdge R650"}},
        "virtualization": virtualization or {},
    }
    if os is not None:
        automatic["os"] = os
    if family is not None:
        automatic["platform_family"] = family
    if cloud is not None:
        automatic["cloud"] = cloud
    return automatic


def add_node(chef, name: str, *, wall: dict[str, Any] | None = None, **options: Any) -> str:
    chef.nodes.create({"name": name, "chef_type": "node", "json_class": "Chef::Node",
                       "chef_environment": "_default", "run_list": [], "default": {}, "override": {},
                       "normal": {"crowbar_wall": wall} if wall is not None else {},
                       "automatic": facts(name, **options)})
    return name


NON_LINUX = {  # name -> (platform, version, os)
    "win.example.com": ("windows", "10.0.17763", "windows"),
    "mac.example.com": ("mac_os_x", "12.6", "darwin"),
    "aix.example.com": ("aix", "7.2", "aix"),
    "fbsd.example.com": ("freebsd", "12.4", "freebsd"),
    "obsd.example.com": ("openbsd", "7.3", "openbsd"),
    "nbsd.example.com": ("netbsd", "9.3", "netbsd"),
    "sol.example.com": ("solaris2", "5.11", "solaris2"),
}


def add_non_linux(chef, *, with_os: bool = True) -> list[str]:
    for index, (name, (platform, version, os)) in enumerate(sorted(NON_LINUX.items()), start=20):
        add_node(chef, name, platform=platform, version=version, os=os if with_os else None,
                 memory_gb=512, index=index)  # the most memory: they would win the controller
    return sorted(NON_LINUX)


def placed(proposal) -> set[str]:
    return {n for members in proposal.elements.values() for n in members}


# -- platforms -------------------------------------------------------------------------------


def test_linux_roles_are_never_placed_on_windows_macos_aix_bsd_or_solaris(crowbar, chef):
    odd = add_non_linux(chef)
    linux = [add_node(chef, f"lx{i}.example.com", index=i, disks={"sda": 240, "sdb": 4000, "sdc": 4000})
             for i in range(1, 4)]
    assert sorted(crowbar.machines.discover()) == sorted(odd + linux)
    for barclamp in ("nova", "ceph", "swift", "eqlx"):
        proposal = crowbar.proposals.create(barclamp, "default")
        assert not placed(proposal) & set(odd), barclamp
        assert placed(proposal), barclamp
        note = next(n for n in proposal.notes if n.startswith("left out 7 machine(s)"))
        assert "win.example.com (windows 10.0.17763)" in note and "supported: linux" in note
    # hand-placing one there is refused, naming the machine, the element and the platform
    with pytest.raises(ValidationError, match=r"aix.example.com cannot hold nova-multi-compute-qemu: "
                                              r"its platform aix 7.2 is not supported \(supported: linux\)"):
        crowbar.proposals.set("nova", "default", {"elements.nova-multi-compute-qemu": "aix.example.com"})


def test_platform_is_inferred_when_ohai_reports_no_os(crowbar, chef):
    odd = add_non_linux(chef, with_os=False)
    add_node(chef, "lx.example.com", platform="debian", version="12")
    crowbar.machines.discover()
    inventory = crowbar.machines.inventory()
    assert {inventory.get(n).os_family for n in odd} == {"windows", "darwin", "aix", "freebsd", "openbsd",
                                                         "netbsd", "solaris2"}
    nova = crowbar.proposals.create("nova", "default")
    assert placed(nova) == {"lx.example.com"}


@pytest.mark.parametrize("barclamp", BARCLAMPS)
def test_only_unusual_platforms_give_an_empty_proposal_with_notes(crowbar, chef, barclamp):
    add_non_linux(chef)
    crowbar.machines.discover()
    proposal = crowbar.proposals.create(barclamp, "default")
    if barclamp == "bios":  # set through the BMC, whatever the OS: no Linux role
        assert all(e.platform is None for e in crowbar.barclamps.get("bios").elements)
    else:
        assert placed(proposal) == set()
        assert any(n.startswith("left out 7 machine(s)") for n in proposal.notes)


def test_crowbar_platform_constraints_match_as_crowbar_did():
    assert version_matches("/.*/", "") and version_matches("/^12\\./", "12.04")
    assert version_matches(">= 12.2", "12.3") and not version_matches(">= 12.2", "12.1")
    assert version_matches("< 15", "12.10") and not version_matches("< 15", "")
    assert version_matches("12", "12.04") and not version_matches("12", "120.1")
    suse_new = Element("x", platform={"suse": ">= 12.2", "ubuntu": "/.*/"})
    old_suse = machine_from_search({"name": "a", "platform": "suse", "platform_version": "12.1"}, None)
    new_suse = machine_from_search({"name": "b", "platform": "suse", "platform_version": "12.3"}, None)
    no_windows = Element("y", exclude_platform={"windows": "/.*/"})
    windows = machine_from_search({"name": "w", "platform": "windows", "os": "windows"}, None)
    assert "suse 12.1 is not supported (supported: suse >= 12.2, ubuntu)" in suse_new.refuses(old_suse)
    assert suse_new.refuses(new_suse) is None
    assert no_windows.refuses(windows) == "its platform windows is excluded"
    assert no_windows.refuses(old_suse) is None
    family = machine_from_search({"name": "r", "platform": "rocky", "platform_family": "rhel",
                                  "platform_version": "9.2"}, None)
    assert Element("z", platform={"rhel": ">= 9"}).refuses(family) is None
    assert Element("l", platform=LINUX).refuses(machine_from_search({"name": "bare"}, None)) is None
    assert os_of("mac_os_x") == "darwin" and os_of("xenserver") == "linux" and os_of("whatever") == ""


# -- virtual machines ------------------------------------------------------------------------

DMI_GUESTS = {  # name -> (manufacturer, product, system)
    "vbox.example.com": ("innotek GmbH", "VirtualBox", "vbox"),
    "vmw.example.com": ("VMware, Inc.", "VMware Virtual Platform", "vmware"),
    "vmw7.example.com": ("VMware, Inc.", "VMware7,1", "vmware"),
    "qemu.example.com": ("QEMU", "Standard PC (i440FX + PIIX, 1996)", "kvm"),
    "rhev.example.com": ("Red Hat", "KVM", "kvm"),
    "xen.example.com": ("Xen", "HVM domU", "xen"),
    "hyperv.example.com": ("Microsoft Corporation", "Virtual Machine", "hyperv"),
    "ec2.example.com": ("Amazon EC2", "m5.large", "amazonec2"),
    "gce.example.com": ("Google", "Google Compute Engine", "gce"),
    "osp.example.com": ("OpenStack Foundation", "OpenStack Nova", "openstack"),
    "do.example.com": ("DigitalOcean", "Droplet", "digitalocean"),
}


def test_virtual_machines_are_recognised_from_dmi_and_cloud_hints(crowbar, chef):
    for index, (name, (vendor, product, _)) in enumerate(sorted(DMI_GUESTS.items()), start=1):
        add_node(chef, name, dmi={"manufacturer": f"{vendor}   ", "product_name": product}, index=index)
    add_node(chef, "metal.example.com", dmi={"manufacturer": "Amazon EC2", "product_name": "i3.metal"},
             cloud={"provider": "ec2"}, index=40)
    add_node(chef, "hinted.example.com", dmi={}, cloud={"provider": "gce"}, index=41)
    add_node(chef, "dell.example.com", index=42)
    add_node(chef, "nested.example.com", dmi={"manufacturer": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"},
             virtualization={"system": "kvm", "role": "host"}, index=43)  # /dev/kvm inside a guest
    crowbar.machines.discover()
    inventory = crowbar.machines.inventory()
    for name, (_, _, system) in DMI_GUESTS.items():
        machine = inventory.get(name)
        assert (machine.is_virtual, machine.virtualization_system, machine.virtualization_source) == \
            (True, system, "dmi"), name
    assert not inventory.get("metal.example.com").is_virtual
    hinted = inventory.get("hinted.example.com")
    assert (hinted.is_virtual, hinted.virtualization_system, hinted.virtualization_source) == (True, "gce", "cloud")
    assert not inventory.get("dell.example.com").is_virtual
    assert inventory.get("nested.example.com").is_virtual
    # nova: a virtual machine never gets KVM, even with vmx in its CPU flags
    nova = crowbar.proposals.create("nova", "default")
    kvm = set(nova.elements.get("nova-multi-compute-kvm", []))
    assert kvm <= {"dell.example.com", "metal.example.com"}


def test_ohai_virtualization_still_counts_and_hosts_stay_hosts():
    xenserver = classify_virtualization({"system": "xen", "role": "host"},
                                        {"manufacturer": "Dell Inc.", "product_name": "PowerEdge R630"})
    assert (xenserver.system, xenserver.role) == ("xen", "host")
    systems = classify_virtualization({"systems": {"kvm": "guest", "docker": "host"}}, {})
    assert (systems.system, systems.role, systems.source) == ("kvm", "guest", "ohai")
    assert classify_virtualization({}, {}) == ("", "", "")


# -- disks, BMC, tiny clusters ---------------------------------------------------------------


@pytest.mark.parametrize("barclamp", BARCLAMPS)
def test_every_barclamp_proposes_on_an_empty_cluster(crowbar, barclamp):
    proposal = crowbar.proposals.create(barclamp, "default")
    assert proposal.notes and placed(proposal) == set()


@pytest.mark.parametrize("barclamp", BARCLAMPS)
def test_every_barclamp_proposes_when_no_machine_has_a_free_disk(crowbar, chef, barclamp):
    add_node(chef, "bare.example.com", disks={}, index=1)  # no disks at all
    add_node(chef, "osonly.example.com", disks={"sda": 240}, index=2)
    add_node(chef, "raid.example.com", disks={"sda": 240, "sdb": 240, "sdc": 4000}, index=3,
             wall={"boot_disk": "sda", "disks_in_use": {"sda": ["mounted /"], "sdb": ["raid md0"],
                                                        "sdc": ["lvm dm-0", "mounted /srv"]}})
    crowbar.machines.discover()
    inventory = crowbar.machines.inventory()
    assert all(m.free_disks() == () for m in inventory)
    assert inventory.get("raid.example.com").disk("sdc").in_use == ("lvm dm-0", "mounted /srv")
    odd = machine_from_search({"name": "x", "crowbar_wall": {"disks_in_use": ["sda"]}}, None)
    assert odd.fact_problems == ("crowbar_wall.disks_in_use should be a mapping of disk to reasons, not a list",)
    proposal = crowbar.proposals.create(barclamp, "default")
    assert proposal.notes
    if barclamp == "swift":
        assert proposal.elements["swift-storage"] == []
        assert any(n.startswith("no machine has a free disk") for n in proposal.notes)
        assert proposal.settings.devices == {}
    if barclamp == "ceph":
        assert proposal.elements["ceph-osd"] == [] and proposal.settings.osd_devices == {}
        assert any(n.startswith("OSDs on none (no machine has a free disk") for n in proposal.notes)
    if barclamp == "bios":  # none reports a BMC
        assert proposal.elements["bios-settings"] == []
        assert any("no known BMC" in n for n in proposal.notes)


@pytest.mark.parametrize("barclamp", BARCLAMPS)
def test_every_barclamp_proposes_on_one_machine(crowbar, chef, barclamp):
    add_node(chef, "solo.example.com", wall={"bmc": {"address": "10.9.9.9"}})
    crowbar.machines.discover()
    proposal = crowbar.proposals.create(barclamp, "default")
    assert proposal.notes and placed(proposal) <= {"solo.example.com"}
    if barclamp in ("nova", "swift", "eqlx", "bios"):
        assert placed(proposal) == {"solo.example.com"}


# -- Crowbar 1.x roles -----------------------------------------------------------------------


def crowbar1x_role(node: str) -> dict[str, Any]:
    """A per-node role as Crowbar 1.x's NodeObject saved it."""
    return {
        "name": node_role_name(node), "json_class": "Chef::Role", "chef_type": "role",
        "description": "", "run_list": ["role[nova-multi-compute]", "role[nova-config-default]"],
        "env_run_lists": {}, "override_attributes": {},
        "default_attributes": {
            "state": "ready", "state_owner": "", "state_change_time": "2013-05-02 11:04:12 UTC",
            "crowbar-revision": 41,
            "run_list_map": {"nova-multi-compute": {"states": ["all"], "priority": 97},
                             "nova-config-default": {"states": ["all"], "priority": 95},
                             "swift-storage": {"states": ["all"], "priority": -1001}},
            "crowbar": {"network": {"admin": {"address": "192.168.124.81"}}, "allocated": True,
                        "hardware": {"bios_set": "Virtualization", "raid_set": "JBODOnly"},
                        "disks": {"sda": {"usage": "OS"}, "sdb": {"usage": "Storage"},
                                  "sdc": {"usage": "Cinder"}}},
        },
    }


def test_a_crowbar1x_role_is_adopted_and_never_stops_discovery_of_others(crowbar, chef, crowbar_cli):
    old = "n2.example.com"
    names = [add_node(chef, f"n{i}.example.com", index=i,
                      wall={"claimed_disks": {"/dev/sdc": "Cinder"}} if i == 2 else None) for i in (1, 2, 3)]
    chef.roles.create(crowbar1x_role(old))
    strange = add_node(chef, "n25.example.com", index=25)
    chef.roles.create({"name": node_role_name(strange), "json_class": "Chef::Role", "chef_type": "role",
                       "description": "someone else's", "run_list": [], "env_run_lists": {},
                       "default_attributes": {"crowbar": "not a mapping"}, "override_attributes": {}})
    result = crowbar_cli.json("machines", "discover")
    assert sorted(result["discovered"]) == sorted(names)
    assert list(result["skipped"]) == [strange]
    record = crowbar.machines.record(old)
    assert (record.state, record.allocated) == ("ready", True)
    assert sorted(record.entries) == ["nova-config-default", "nova-multi-compute"]  # the tombstone is gone
    machine = crowbar.machines.inventory([old]).get(old)
    assert machine.state == "ready" and machine.roles == ("nova-config-default", "nova-multi-compute")
    assert dict(machine.claimed_disks) == {"sda": "crowbar-1.x:OS", "sdc": "crowbar-1.x:Cinder"}
    assert [d.name for d in machine.free_disks()] == ["sdb"]
    assert machine.disk("sdc").in_use == ("claimed by Cinder (crowbar_wall.claimed_disks)",)
    role = chef.roles.get(node_role_name(old))
    kept = role["default_attributes"]["crowbar"]
    assert kept["hardware"]["bios_set"] == "Virtualization" and kept["network"]["admin"]
    assert kept["crowbar_1x"]["crowbar-revision"] == 41 and not is_crowbar1x_role(role)
    assert f"role[{node_role_name(old)}]" in chef.nodes.get(old)["run_list"]
    # adopted once: discovering again changes nothing, and its disks stay out of proposals
    assert crowbar.machines.discover([old]) == []
    ceph = crowbar.proposals.create("ceph", "default")
    assert ceph.settings.osd_devices.get(old, ["sdb"]) == ["sdb"]


def test_the_command_proposes_on_a_cluster_with_no_free_disk_without_a_traceback(crowbar, chef, crowbar_cli):
    add_node(chef, "osonly.example.com", disks={"sda": 240})
    crowbar.machines.discover()
    for barclamp in BARCLAMPS:
        code, out, err = crowbar_cli(barclamp, "proposal", "create", "default")
        assert code == 0 and "Traceback" not in out + err, (barclamp, out, err)
    code, out, err = crowbar_cli("swift", "proposal", "commit", "default")
    assert code == 1 and err.strip() == "error: swift/default: swift-storage needs at least 1 machine(s), has 0"


def test_whole_nvme_and_mmc_disks_are_not_taken_for_partitions():
    from barclamp_sdk.model.inventory import disk_of

    assert disk_of("nvme0n1") == "nvme0n1" and disk_of("/dev/mmcblk0") == "mmcblk0"
    assert disk_of("nvme0n1p1") == "nvme0n1" and disk_of("mmcblk0p2") == "mmcblk0" and disk_of("sdb3") == "sdb"
    machine = machine_from_search({"name": "n", "crowbar_wall": {"boot_disk": "nvme1n1"},
                                   "block_device": {"nvme0n1": {"size": "1000"}, "nvme1n1": {"size": "1000"}}}, None)
    assert [d.name for d in machine.disks if d.os_disk] == ["nvme1n1"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(virtualization=JSON, dmi=JSON, cloud=JSON, wall=JSON, platform=JSON, os=JSON,
       in_use=JSON, claimed=JSON)
def test_odd_platform_virtualization_and_wall_shapes_never_break_a_machine(
        virtualization, dmi, cloud, wall, platform, os, in_use, claimed):
    wall = dict(wall) if isinstance(wall, dict) else wall
    if isinstance(wall, dict):
        wall.update({"disks_in_use": in_use, "claimed_disks": claimed})
    node = {"name": "odd", "virtualization": virtualization, "dmi_system": dmi, "cloud": cloud,
            "crowbar_wall": wall, "platform": platform, "os": os,
            "block_device": {"sda": {"size": "100"}, "sdb": {"size": "100"}}}
    machine = machine_from_search(node, None)
    assert isinstance(machine.virtualization_system, str) and isinstance(machine.virtualization_role, str)
    assert machine.is_virtual == (machine.virtualization_role == "guest")
    assert isinstance(machine.os_family, str)
    reason = Element("e", platform=LINUX).refuses(machine)
    assert reason is None or reason.startswith("its platform ")
    assert all(isinstance(w, str) for d in machine.disks for w in d.in_use)
