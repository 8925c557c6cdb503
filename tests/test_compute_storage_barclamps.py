"""nova, ceph and eqlx: placement from inventory, links, secrets, CLI."""

from __future__ import annotations

import json

import pytest

from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.placement import odd_quorum
from barclamps.ceph import CephAttributes
from barclamps.nova.settings import NovaAttributes

MIXES = {
    1: {"compute": 1},
    3: {"compute": 1, "storage": 1, "vm": 1},
    12: {"compute": 5, "storage": 4, "vm": 3},
    100: {"compute": 50, "storage": 30, "vm": 20},
}


def discovered(crowbar, fleet, mix):
    names = []
    for profile, count in mix.items():
        names += fleet.add(count, profile, clients=False)
    crowbar.machines.discover(names)
    return names


def ready(crowbar, fleet, mix):
    names = discovered(crowbar, fleet, mix)
    crowbar.machines.allocate(names)
    fleet.boot(names)
    return names


@pytest.mark.parametrize("size", sorted(MIXES))
def test_placements_from_inventory(crowbar, fleet, size):
    discovered(crowbar, fleet, MIXES[size])
    inventory = crowbar.machines.inventory()
    ceph = crowbar.proposals.create("ceph", "default")
    nova = crowbar.proposals.create("nova", "default")
    eqlx = crowbar.proposals.create("eqlx", "default")

    # nova: controller where memory is most, among machines not built for storage.
    [controller] = nova.elements["nova-multi-controller"]
    services = [m for m in inventory if not m.storage_heavy] or list(inventory)
    assert inventory.get(controller).memory_bytes == max(m.memory_bytes for m in services)
    kvm, qemu = nova.elements["nova-multi-compute-kvm"], nova.elements["nova-multi-compute-qemu"]
    assert all(inventory.get(n).can_virtualize and not inventory.get(n).is_virtual for n in kvm)
    assert all(inventory.get(n).is_virtual or not inventory.get(n).can_virtualize for n in qemu)
    computes = set(kvm) | set(qemu)
    if size == 1:
        assert computes == {controller}  # a single machine gets everything
    else:
        assert controller not in computes
        assert not any(inventory.get(n).storage_heavy for n in computes)
        assert computes == {m.name for m in inventory if not m.storage_heavy} - {controller}
    assert nova.elements["nova-multi-volume"] == [controller]
    assert any("controller on" in note and "memory" in note for note in nova.notes)
    assert any("KVM compute" in note for note in nova.notes)

    # ceph: an odd number of monitors by size, OSDs with exactly their devices.
    mons, osds = ceph.elements["ceph-mon"], ceph.elements["ceph-osd"]
    assert len(mons) == odd_quorum(size) and len(mons) % 2 == 1
    light = {m.name for m in inventory if not m.storage_heavy}
    if len(light) >= len(mons):
        assert set(mons) <= light  # machines not built for storage are preferred
    else:
        assert light <= set(mons)
    devices = ceph.attributes["osd_devices"]
    assert sorted(devices) == sorted(osds)
    for node, disks in devices.items():
        machine = inventory.get(node)
        assert disks == [d.name for d in machine.data_disks]
        assert machine.disks[0].name not in disks  # never the OS disk
    heavy = [m.name for m in inventory if m.storage_heavy]
    assert set(osds) == set(heavy) if len(heavy) >= 2 else len(osds) == min(2, size)
    assert ceph.attributes["pool_size"] == min(3, len(osds))
    assert any("monitor(s)" in note for note in ceph.notes) and any("OSDs on" in note for note in ceph.notes)

    # eqlx: the driver where nova runs its volume service.
    assert eqlx.elements["eqlx-driver"] == [controller]

    # Constraints hold for a commit (every element complete), except where too small.
    crowbar.proposals.validate(nova)
    if size >= 3:
        crowbar.proposals.validate(ceph)
    else:
        with pytest.raises(ValidationError, match="ceph-osd needs at least 2 machine"):
            crowbar.proposals.validate(ceph)
    # No disk is claimed twice: nova's raw volume disks are not ceph's.
    nova_disks = {(n, d) for n, ds in nova.attributes["volume"]["nova_volume_disks"].items() for d in ds}
    ceph_disks = {(n, d) for n, ds in devices.items() for d in ds}
    assert not nova_disks & ceph_disks


def test_nova_finds_and_links_ceph_for_rbd_and_waits_for_it(crowbar, fleet, chef):
    ready(crowbar, fleet, MIXES[12])
    crowbar.proposals.create("nova", "default")
    before = chef.stats.snapshot()["writes"]
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("nova", "default", {"volume.volume_type": "rbd"})
    assert "no ceph proposal exists" in str(info.value)
    assert "`crowbar ceph proposal create default`" in str(info.value)
    assert chef.stats.snapshot()["writes"] == before
    crowbar.proposals.create("ceph", "default")
    nova = crowbar.proposals.set("nova", "default", {"volume.volume_type": "rbd"})
    assert nova.attributes["volume"]["rbd"]["ceph_instance"] == "default"
    assert nova.attributes["volume"]["nova_volume_disks"] == {}  # rbd needs no local disks
    assert "volume.rbd.ceph_instance: linked ceph/default" in nova.notes
    result = crowbar.proposals.commit("nova", "default")
    assert result.status == "queued"
    assert result.reasons == ["depends on ceph/default, which is not applied yet: commit it"]
    assert crowbar.proposals.commit("ceph", "default").status == "applied"
    assert crowbar.queue.items() == []
    assert crowbar.proposals.status("nova", "default").status == "ready"
    role = chef.roles.get("nova-config-default")
    assert role["default_attributes"]["nova"]["volume"]["rbd"]["ceph_instance"] == "default"
    # Back to raw volumes: the link is dropped, and so is the dependency.
    nova = crowbar.proposals.set("nova", "default", {"volume.volume_type": "raw"})
    assert nova.attributes["volume"]["rbd"]["ceph_instance"] == ""
    assert nova.attributes["volume"]["nova_volume_disks"]


def test_nova_links_eqlx_and_checks_the_driver_covers_nova_volume(crowbar, fleet, chef):
    ready(crowbar, fleet, MIXES[12])
    with pytest.raises(ValidationError, match="no eqlx proposal exists"):
        crowbar.proposals.create("nova", "default", settings={"volume.volume_type": "eqlx"})
    eqlx = crowbar.proposals.create("eqlx", "default")
    nova = crowbar.proposals.create("nova", "default", settings={"volume.volume_type": "eqlx"})
    assert nova.attributes["volume"]["eqlx_instance"] == "default"
    assert crowbar.proposals.commit("nova", "default").reasons == [
        "depends on eqlx/default, which is not applied yet: commit it"]
    with pytest.raises(ValidationError, match="san_password is not set"):
        crowbar.proposals.commit("eqlx", "default")
    assert nova.attributes["volume"]["eqlx"]["san_ip"] == "192.168.124.11"  # eqlx/default as it is now
    crowbar.proposals.set("eqlx", "default", {"san_password": "s4n-pass", "san_ip": "10.20.0.5"})
    assert crowbar.proposals.commit("eqlx", "default").status == "applied"
    assert crowbar.proposals.status("nova", "default").status == "ready"
    # The queued nova commit copied the edited eqlx settings to Crowbar fred's path first.
    role = chef.roles.get("nova-config-default")["default_attributes"]["nova"]["volume"]["eqlx"]
    assert role["san_ip"] == "10.20.0.5" and role["eqlx_group_name"] == "group-0"
    ref = role["san_password"]
    assert {k: ref[k] for k in ("data_bag", "key")} == {"data_bag": "crowbar_secrets", "key": "san_password"}
    assert ref["item"].startswith("eqlx-default--")  # a version of eqlx's secrets
    assert crowbar.secrets.get(ref) == "s4n-pass"
    assert crowbar.proposals.get("nova", "default").attributes["volume"]["eqlx"] == role
    other = [n for n in crowbar.machines.inventory().names() if n not in eqlx.elements["eqlx-driver"]][0]
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("nova", "default", {"elements.nova-multi-volume": other})
    assert any(f"has no eqlx-driver on {other}" in e and "crowbar eqlx proposal edit default" in e
               for e in info.value.errors)


@pytest.mark.parametrize("values,message", [
    ({"san_ip": "not an address!"}, "must be an IP address or a host name"),
    ({"san_ssh_port": "70000"}, "less than or equal to 65535"),
    ({"eqlx_group_name": ""}, "at least 1 character"),
    ({"eqlx_use_chap": "true", "eqlx_chap_login": ""}, "eqlx_chap_login must not be empty"),
])
def test_eqlx_settings_are_validated(crowbar, fleet, values, message):
    discovered(crowbar, fleet, {"compute": 1})
    crowbar.proposals.create("eqlx", "default")
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("eqlx", "default", values)
    assert any(message in e for e in info.value.errors), info.value.errors


def test_vcenter_uses_one_proxy_and_never_touches_esx_hosts(crowbar, fleet):
    names = ready(crowbar, fleet, {"compute": 2, "esx": 3})
    esx = names[2:]
    nova = crowbar.proposals.create("nova", "default", settings={"hypervisor": "vcenter"})
    assert len(nova.elements["nova-multi-compute-vmware"]) == 1
    assert not set(nova.nodes()) & set(esx)
    assert nova.elements["nova-multi-compute-kvm"] == []
    assert any("ESX hosts" in note and "second master" in note for note in nova.notes)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("nova", "default", {"elements.nova-multi-compute-vmware": esx[0]})
    assert any("second master" in e for e in info.value.errors)
    with pytest.raises(ValidationError, match="vcenter needs host, user, clusters, password"):
        crowbar.proposals.commit("nova", "default")
    crowbar.proposals.set("nova", "default", {"vcenter.host": "vc.example.com", "vcenter.user": "admin",
                                              "vcenter.clusters": "prod", "vcenter.password": "vc-pass"})
    assert crowbar.proposals.commit("nova", "default").status == "applied"


def test_xenserver_gets_one_agent_per_host(crowbar, fleet):
    names = ready(crowbar, fleet, {"compute": 2, "xenserver": 3})
    xen = names[2:]
    nova = crowbar.proposals.create("nova", "default", settings={"hypervisor": "xenserver"})
    assert sorted(nova.elements["nova-multi-compute-xen"]) == sorted(xen)
    assert sorted(nova.attributes["xenserver"]["hosts"]) == sorted(xen)
    assert all(url.startswith("https://10.") for url in nova.attributes["xenserver"]["hosts"].values())
    assert nova.elements["nova-multi-controller"][0] in names[:2]
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("nova", "default", {"elements.nova-multi-compute-xen": names[0]})
    assert any("not a XenServer host" in e for e in info.value.errors)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("nova", "default", {"elements.nova-multi-compute-kvm": names[1]})
    assert any("does not belong to the xenserver architecture" in e for e in info.value.errors)


def test_committed_roles_hold_documented_attributes_and_no_secret(crowbar, fleet, chef):
    ready(crowbar, fleet, MIXES[12])
    crowbar.proposals.create("ceph", "default")
    crowbar.proposals.create("eqlx", "default", settings={"san_password": "s4n-pass",
                                                          "eqlx_use_chap": "true", "eqlx_chap_password": "ch4p"})
    crowbar.proposals.create("nova", "default", settings={"volume.volume_type": "eqlx"})
    for barclamp in ("ceph", "eqlx", "nova"):
        assert crowbar.proposals.commit(barclamp, "default").status in ("applied", "unchanged")
    ceph_role = chef.roles.get("ceph-config-default")
    keys = {f.alias or n for n, f in CephAttributes.model_fields.items()}
    assert set(ceph_role["default_attributes"]["ceph"]) == keys - {"osd_devices"}  # per machine: in its role
    osd = crowbar.proposals.get("ceph", "default")
    node = osd.elements["ceph-osd"][0]
    node_role = chef.roles.get(node_role_name(node))
    assert node_role["default_attributes"]["ceph"]["osd_devices"] == {node: osd.attributes["osd_devices"][node]}
    assert set(chef.roles.get("nova-config-default")["default_attributes"]["nova"]) == set(NovaAttributes.model_fields)
    ref = ceph_role["default_attributes"]["ceph"]["monitor-secret"]
    assert {k: ref[k] for k in ("data_bag", "key")} == {"data_bag": "crowbar_secrets", "key": "monitor-secret"}
    assert ref["item"].startswith("ceph-default--") and crowbar.secrets.get(ref)  # a version of ceph's secrets
    secrets = [value for _, value in crowbar.secrets.values()]
    assert "s4n-pass" in secrets and "ch4p" in secrets
    assert sum(1 for s in secrets if s.startswith("AQ") and len(s) == 40) == 2  # cephx keys
    everything = [json.dumps(chef.roles.get(r)) for r in chef.roles.list()]
    everything += [json.dumps(chef.nodes.get(n)) for n in chef.nodes.list()]
    for bag in chef.data_bags.list():
        if bag != "crowbar_secrets":
            everything += [json.dumps(chef.data_bags.get_item(bag, i)) for i in chef.data_bags.items(bag)]
    for secret in secrets:
        assert not any(secret in text for text in everything), secret


def test_cli_for_the_three_barclamps(crowbar, fleet, crowbar_cli):
    ready(crowbar, fleet, MIXES[12])

    def run(*args):
        code, out, err = crowbar_cli(*args)
        assert code == 0, err
        return out

    assert "nova/default" in run("nova", "proposal", "create", "default")
    run("ceph", "proposal", "create", "default")
    shown = json.loads(run("ceph", "proposal", "show", "default", "--json"))
    assert shown["id"] == "bc-ceph-default" and shown["deployment"]["ceph"]["elements"]["ceph-osd"]
    run("nova", "proposal", "edit", "default", "--set", "volume.volume_type=rbd")
    nova = json.loads(run("nova", "proposal", "show", "default", "--json"))
    assert nova["attributes"]["nova"]["volume"]["rbd"]["ceph_instance"] == "default"
