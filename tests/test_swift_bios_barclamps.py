"""swift (zones, devices as data) and bios (real BMC peers, never a mock)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from barclamp_sdk.errors import ValidationError
from barclamp_sdk.testing.bmcpeers import FACTORY_BIOS, BmcLab
from barclamps.bios import target_settings

RACKS = ("r1", "r2", "r3", "r4")


def add(crowbar, fleet, mix, *, racks=False):
    names = []
    for profile, count in mix.items():
        names += fleet.add(count, profile, clients=False,
                           wall=(lambda n, i: {"rack": RACKS[i % len(RACKS)]}) if racks else None)
    crowbar.machines.discover(names)
    return names


@pytest.mark.parametrize("mix", [
    {"compute": 1},
    {"compute": 2, "storage": 2, "vm": 1},
    {"compute": 10, "storage": 24, "vm": 6},
], ids=["1", "5", "40"])
def test_swift_proposals_balance_zones_and_take_no_ceph_disk(crowbar, fleet, mix):
    size = sum(mix.values())
    add(crowbar, fleet, mix, racks=size == 40)
    if size > 1:
        ceph = crowbar.proposals.create("ceph", "default")
        if size == 40:  # review: give half of the storage servers back to swift
            keep = ceph.elements["ceph-osd"][:12]
            crowbar.proposals.set("ceph", "default", {
                "elements.ceph-osd": ",".join(keep),
                "osd_devices": json.dumps({n: d for n, d in ceph.attributes["osd_devices"].items() if n in keep})})
        ceph = crowbar.proposals.get("ceph", "default")
        ceph_disks = {(n, d) for n, ds in ceph.attributes["osd_devices"].items() for d in ds}
    else:
        ceph_disks = set()
    swift = crowbar.proposals.create("swift", "default")
    inventory = crowbar.machines.inventory()
    settings = swift.attributes
    storage = swift.elements["swift-storage"]
    assert len(storage) >= settings["zones"] >= settings["replicas"] >= 1
    assert len(swift.elements["swift-ring-compute"]) == 1 and swift.elements["swift-proxy"]
    claimed = set()
    machines_per_zone: Counter[int] = Counter()
    for node, devices in settings["devices"].items():
        machine = inventory.get(node)
        zones = {d["zone"] for d in devices}
        assert len(zones) == 1  # a machine is one failure domain
        machines_per_zone[zones.pop()] += 1
        for device in devices:
            disk = machine.disk(device["name"])
            assert disk is not None and not disk.os_disk  # every device exists, never the OS disk
            assert device["weight"] == max(0.01, round(disk.size_bytes / 1e12, 2))
            claimed.add((node, device["name"]))
    assert not claimed & ceph_disks  # nothing ceph claims
    assert set(machines_per_zone) == set(range(1, settings["zones"] + 1))
    assert max(machines_per_zone.values()) - min(machines_per_zone.values()) <= 1
    if size == 40:
        assert settings["zones"] == 3 and len(storage) == 12
        racks_of_zone = defaultdict(Counter)
        for node, devices in settings["devices"].items():
            racks_of_zone[devices[0]["zone"]][inventory.get(node).rack] += 1
        # 4 racks of 3 cannot fill 3 zones evenly whole: each zone spans racks instead.
        assert all(len(racks) >= 3 for racks in racks_of_zone.values())
    assert settings["auth_method"] == "swauth"
    # swauth's admin password (Crowbar's cluster_admin_pw) is generated, kept in the secrets store.
    ref = settings["cluster_admin_pw"]
    assert {k: ref[k] for k in ("data_bag", "key")} == {"data_bag": "crowbar_secrets", "key": "cluster_admin_pw"}
    assert ref["item"].startswith("swift-default--") and crowbar.secrets.get(ref)  # a version of swift's secrets
    assert settings["middlewares"]["bulk"]["enabled"] is True and settings["middlewares"]["s3"] == {"enabled": False}
    assert any("zone(s)" in note for note in swift.notes)
    crowbar.proposals.validate(swift)


def test_zones_keep_whole_racks_only_when_that_stays_balanced():
    from barclamp_sdk.model.inventory import Machine
    from barclamps.swift import balanced_zones

    def machines(layout):
        return [Machine(name=f"m{r}{i}", rack=r) for r, count in layout.items() for i in range(count)]

    even = balanced_zones(machines({"a": 2, "b": 2, "c": 2}), 3)
    assert {even[f"m{r}{i}"] for r in "abc" for i in range(2)} == {1, 2, 3}
    assert all(even[f"m{r}0"] == even[f"m{r}1"] for r in "abc")  # whole racks
    uneven = balanced_zones(machines({"a": 3, "b": 3, "c": 3, "d": 3}), 3)
    assert sorted(Counter(uneven.values()).values()) == [4, 4, 4]
    unknown = balanced_zones([Machine(name=f"n{i}") for i in range(7)], 3)
    assert sorted(Counter(unknown.values()).values()) == [2, 2, 3]


def test_swift_validation(crowbar, fleet):
    add(crowbar, fleet, {"compute": 1, "storage": 2})
    crowbar.proposals.create("swift", "default")
    crowbar.proposals.set("swift", "default", {"replicas": "3", "zones": "3"})
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.validate(crowbar.proposals.get("swift", "default"))
    assert "swift needs storage machines >= zones >= replicas; has 2 >= 3 >= 3" in info.value.errors[0]
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("swift", "default", {"elements.swift-ring-compute": ""})
        crowbar.proposals.validate(crowbar.proposals.get("swift", "default"))
    assert any("swift-ring-compute needs exactly 1" in e for e in info.value.errors)


def test_swift_cannot_take_a_disk_ceph_claimed(crowbar, fleet):
    names = add(crowbar, fleet, {"storage": 3})
    crowbar.proposals.create("ceph", "default")
    crowbar.proposals.create("swift", "scratch", from_inventory=False)
    with pytest.raises(ValidationError) as info:
        crowbar.proposals.set("swift", "scratch", {
            "elements.swift-storage": names[0],
            "devices": json.dumps({names[0]: [{"name": "sdb", "zone": 1, "weight": 8.0}]})})
    assert any(f"disk sdb on {names[0]} is claimed by ceph/default" in e for e in info.value.errors)


# -- bios --------------------------------------------------------------------------------


@pytest.fixture
def lab(tmp_path):
    names = [f"bmc{i}.example.com" for i in range(5)]
    faults = {names[2]: "wrong-password", names[3]: "unreachable", names[4]: "strict"}
    with BmcLab(tmp_path / "bmcs", names, faults=faults) as running:
        yield running


def test_bios_through_real_bmcs_on_the_way_to_ready(crowbar, fleet, lab):
    ok, ok2, wrong_password, unreachable, strict = lab.names
    fleet.add(5, "compute", names=lab.names, wall=lambda n, i: lab.wall(n))
    [vm] = fleet.add(1, "vm")
    everyone = [*lab.names, vm]
    fleet.boot(everyone)  # discovered, paused
    # The operator checks each BMC and confirms it (its Redfish certificate is pinned then).
    for name in (ok, ok2, wrong_password, strict):
        crowbar.machines.bmc.confirm(name)
    crowbar.machines.bmc.confirm(unreachable, certificate_sha256="ab" * 32)  # known out of band; down now
    # Operators decide what machines are for: nova compute on one, ceph OSD on another.
    crowbar.proposals.create("nova", "default", from_inventory=False)
    crowbar.proposals.set("nova", "default", {"elements.nova-multi-controller": vm,
                                              "elements.nova-multi-compute-kvm": ok})
    assert crowbar.proposals.commit("nova", "default").status == "queued"  # marks ok pending nova
    bios = crowbar.proposals.create("bios", "default", settings={"bmc_username": "admin", "bmc_password": "password"})
    assert sorted(bios.elements["bios-settings"]) == sorted(lab.names)
    assert any(vm in note and "no known BMC" in note for note in bios.notes)
    assert crowbar.proposals.commit("bios", "default").status == "applied"
    crowbar.machines.allocate(everyone)
    states = fleet.boot(everyone)
    assert states[ok] == "ready" and states[ok2] == "ready" and states[vm] == "ready"
    assert {states[wrong_password], states[unreachable], states[strict]} == {"problem"}

    # Redfish: exactly the chosen set, read back; IPMI: next boot from the network.
    machine = crowbar.machines.inventory([ok]).get(ok)
    virtualization = target_settings(machine, "Virtualization")
    assert {k: lab.bios(ok)[k] for k in virtualization} == virtualization
    assert lab.bios(ok)["ProcVirtualization"] == "Enabled" and lab.bios(ok2)["ProcVirtualization"] == "Disabled"
    assert lab.ipmi[ok].boot_device == "pxe" and lab.ipmi[ok2].boot_device == "pxe"
    hardware = crowbar.machines.record(ok).hardware
    assert (hardware["bios_set"], hardware["raid_set"]) == ("Virtualization", "SingleRaid10")
    assert hardware["bios"]["status"] == "applied" and "ProcVirtualization" in hardware["bios"]["changed"]
    assert hardware["bios"]["reason"] == "Virtualization: because of nova-multi-compute-kvm"
    assert len(crowbar.machines.bmc.get(ok).certificate_sha256) == 64 and "bmc_certificate" not in hardware
    assert crowbar.machines.record(ok2).hardware["bios_set"] == "default"

    reasons = {n: crowbar.machines.show(n)["hardware"]["bios"]["reason"] for n in (wrong_password, unreachable, strict)}
    assert "refused the user name or password" in reasons[wrong_password]
    assert "no answer on port" in reasons[unreachable]
    assert "rejected the value" in reasons[strict] and "is not a valid value for" in reasons[strict]
    for name in (wrong_password, unreachable, strict):
        assert crowbar.machines.record(name).state == "problem"
    assert lab.bios(strict) == FACTORY_BIOS  # the rejected change was not half applied
    # Its Redfish side accepted the settings; the IPMI side then refused the password.
    assert crowbar.machines.record(wrong_password).hardware["bios"]["changed"] == ["BootMode"]
    assert lab.ipmi[wrong_password].boot_device == "default"


def test_bios_apply_from_the_cli(crowbar, fleet, lab, crowbar_cli):
    ok, ok2, wrong_password = lab.names[:3]
    fleet.add(3, "compute", names=[ok, ok2, wrong_password], wall=lambda n, i: lab.wall(n))
    crowbar.machines.discover()

    def run(*args, expect=0):
        code, out, err = crowbar_cli(*args)
        assert code == expect, (code, out, err)
        return out, err

    run("bios", "proposal", "create", "default", "--set", "bmc_username=admin", "--set", "bmc_password=password")
    run("bios", "proposal", "commit", "default")
    for name in (ok, ok2, wrong_password):
        run("machines", "bmc", "confirm", name)
    out, _ = run("bios", "apply", ok, ok2, "--json")
    results = {r["machine"]: r for r in json.loads(out)}
    assert results[ok]["status"] == "applied" and results[ok]["changed"] == {"BootMode": "Uefi"}
    out, _ = run("bios", "apply", ok, "--json")
    assert json.loads(out)[0]["status"] == "unchanged"  # nothing differs: nothing set
    out, err = run("bios", "apply", ok, wrong_password, expect=1)
    assert "problem" in out and "refused the user name or password" in out
    assert err.strip() == ("error: 1 of 2 machine(s) are in problem (see above); "
                           "fix their BMCs and run `crowbar bios apply` again")
    _, err = run("bios", "apply", "nope.example.com", expect=1)
    assert "nope.example.com not in the bios-settings of bios/default as committed (r1)" in err


def test_a_bios_transition_reads_its_machine_not_the_cluster(crowbar, fleet, lab, chef):
    ok = lab.names[0]
    fleet.add(1, "compute", names=[ok], wall=lambda n, i: lab.wall(n))
    others = fleet.add(40, "compute", clients=False)  # past what is read directly: the cluster would be searched
    fleet.boot([ok, *others])  # discovered, paused
    crowbar.machines.bmc.confirm(ok)
    crowbar.proposals.create("bios", "default", settings={"bmc_username": "admin", "bmc_password": "password"})
    assert crowbar.proposals.commit("bios", "default").status == "applied"
    crowbar.machines.allocate([ok])

    def searches():
        shapes = chef.stats.snapshot()["by_endpoint"]
        return shapes.get("GET /search/*", 0) + shapes.get("POST /search/*", 0)

    before = searches()
    assert fleet.boot([ok])[ok] == "ready"
    assert crowbar.machines.record(ok).hardware["bios"]["status"] == "applied"
    assert searches() == before
