"""The node-side Ohai plugin, run by the CI machine's real ``ohai``, discovered end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from barclamp_sdk.model.inventory import disk_of
from barclamp_sdk.node import OHAI_PLUGIN_DIR
from barclamp_sdk.testing.bmcpeers import IpmiPeer

OHAI = shutil.which("ohai")


def run_ohai(*attributes: str, env: dict[str, str] | None = None) -> Any:
    """The real ohai with the plugin directory; its JSON output."""
    assert OHAI is not None, "ohai is not installed: ./dev test installs it (apt-get install ohai)"
    result = subprocess.run([OHAI, "-d", str(OHAI_PLUGIN_DIR), "-L", "/dev/null", *attributes],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def root_block_device() -> str | None:
    """What the kernel says "/" lives on (the plugin's answer, found independently)."""
    stat = os.stat("/")
    link = Path(f"/sys/dev/block/{os.major(stat.st_dev)}:{os.minor(stat.st_dev)}")
    if not link.exists():
        return None
    name = link.resolve().name
    partition = Path(f"/sys/class/block/{name}/partition")
    return Path(f"/sys/class/block/{name}").resolve().parent.name if partition.exists() else name


def test_plugin_reports_the_boot_disk_and_disks_in_use_as_the_kernel_sees_them():
    wall = run_ohai("crowbar_wall")
    assert wall["collector"]["name"] == "barclamp-sdk crowbar_wall" and wall["collector"]["version"] == 1
    root = root_block_device()
    slaves = list(Path(f"/sys/class/block/{root}/slaves").glob("*")) if root else []
    if root and not slaves and not Path("/boot").is_mount():
        assert wall["boot_disk"] == root
        assert "mounted /" in wall["disks_in_use"][root]
    elif root is None:  # "/" is not on a block device (overlay in a container)
        assert "boot_disk" not in wall
        assert any("boot disk unknown" in n for n in wall["collector"]["notes"])
    else:
        assert wall["boot_disk"] in wall["disks_in_use"]
    if not any(Path(p).exists() for p in ("/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0")):
        assert "bmc" not in wall
        assert any(n.startswith("no BMC: no IPMI device") for n in wall["collector"]["notes"])


def test_real_ohai_output_is_discovered_end_to_end(crowbar, chef):
    facts = run_ohai()
    assert "crowbar_wall" in facts and facts["platform"]
    name = "ohai-ci.example.com"
    chef.nodes.create({"name": name, "chef_type": "node", "json_class": "Chef::Node",
                       "chef_environment": "_default", "run_list": [], "normal": {}, "default": {},
                       "override": {}, "automatic": facts})
    assert crowbar.machines.discover() == [name]
    machine = crowbar.machines.inventory().get(name)
    assert machine is not None and machine.fact_problems == ()
    assert (machine.platform, machine.platform_version) == (facts["platform"], facts["platform_version"])
    assert machine.os_family == "linux"
    assert machine.cpu_count == facts["cpu"]["total"] and machine.memory_bytes > 0
    pseudo = ("loop", "ram", "zram", "dm-", "sr", "fd", "md", "nbd")
    real = sorted(n for n in facts["block_device"] if not n.startswith(pseudo))
    assert sorted(d.name for d in machine.disks) == real
    wall = facts["crowbar_wall"]
    if "boot_disk" in wall:
        assert [d.name for d in machine.disks if d.os_disk] == [disk_of(wall["boot_disk"])]
    in_use = set(wall["disks_in_use"])
    assert {d.name for d in machine.disks if d.in_use} == in_use & set(real)
    assert not {d.name for d in machine.data_disks} & in_use
    virt = facts.get("virtualization") or {}
    if virt.get("role") == "guest":
        assert machine.is_virtual and machine.virtualization_system == virt["system"]
    # every shipped barclamp proposes from this real machine without crashing
    for barclamp in ("nova", "ceph", "swift", "eqlx", "bios"):
        proposal = crowbar.proposals.create(barclamp, "real")
        assert proposal.notes, barclamp
    assert crowbar.proposals.get("nova", "real").elements["nova-multi-controller"] == [name]


def test_bmc_is_read_with_the_real_ipmitool_from_a_real_bmc(tmp_path, crowbar, chef):
    peer = IpmiPeer(tmp_path / "bmc").start()
    try:
        options = f"-I lan -H 127.0.0.1 -p {peer.port} -U admin -P password"
        for setting in (["ipsrc", "static"], ["ipaddr", "192.0.2.77"], ["netmask", "255.255.255.0"],
                        ["macaddr", "aa:bb:cc:00:11:22"], ["defgw", "ipaddr", "192.0.2.1"]):
            subprocess.run(["ipmitool", *options.split(), "lan", "set", "1", *setting],
                           check=True, capture_output=True, timeout=30)
        facts = run_ohai(env={"CROWBAR_WALL_IPMITOOL_OPTIONS": options})
    finally:
        peer.stop()
    bmc = facts["crowbar_wall"]["bmc"]
    assert bmc == {"channel": 1, "mac": "aa:bb:cc:00:11:22", "address": "192.0.2.77",
                   "netmask": "255.255.255.0", "gateway": "192.0.2.1", "source": "Static Address"}
    chef.nodes.create({"name": "bmc-ci.example.com", "chef_type": "node", "json_class": "Chef::Node",
                       "chef_environment": "_default", "run_list": [], "normal": {}, "default": {},
                       "override": {}, "automatic": facts})
    crowbar.machines.discover()
    machine = crowbar.machines.inventory().get("bmc-ci.example.com")
    assert machine is not None and machine.bmc is not None and machine.bmc.address == "192.0.2.77"


def test_missing_ipmitool_and_a_bmc_that_does_not_answer_are_notes_not_failures(tmp_path):
    absent = str(tmp_path / "ipmitool")  # as on a node without the package
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_IPMITOOL": absent,
                                         "CROWBAR_WALL_IPMITOOL_OPTIONS": "-I lanplus -H 127.0.0.1"})
    assert "bmc" not in wall and "BMC not read: ipmitool is not installed" in wall["collector"]["notes"]
    silent = f"-I lan -H 127.0.0.1 -p {_closed_udp_port()} -U admin -P password -R 1 -N 1"
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_IPMITOOL_OPTIONS": silent})
    assert "bmc" not in wall
    assert any(n.startswith("BMC not read") for n in wall["collector"]["notes"])


def test_site_facts_come_from_the_operator_file_and_cannot_override_measured_facts(tmp_path):
    site = tmp_path / "wall.json"
    site.write_text(json.dumps({"rack": "r07", "hypervisor_host": "kvm3.example.com",
                                "boot_disk": "sdz", "bmc": {"address": "203.0.113.9"}}))
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_SITE_FILE": str(site)})
    assert wall["rack"] == "r07" and wall["hypervisor_host"] == "kvm3.example.com"
    assert wall.get("boot_disk") != "sdz" and (wall.get("bmc") or {}).get("address") != "203.0.113.9"
    site.write_text("[1, 2")
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_SITE_FILE": str(site)})
    assert "rack" not in wall and any(n.startswith(f"{site} ignored") for n in wall["collector"]["notes"])
    site.write_text("[1, 2]")
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_SITE_FILE": str(site)})
    assert f"{site} ignored: not a JSON object" in wall["collector"]["notes"]


def _closed_udp_port() -> int:
    from barclamp_sdk.testing.bmcpeers import fresh_port

    return fresh_port()  # free for UDP too, and never another pytest-xdist worker's BMC peer's


def fake_host(root: Path) -> Path:
    """/sys, /proc and /dev of a server: RAID1 root (md0 on sda2+sdb2), /boot on sda1,
    LVM (dm-0 on sdc) at /srv, swap on sdd1, dm-crypt (dm-1 on sde) unmounted,
    a multipath map (dm-2 on sdg), /var on nvme0n1p1, and sdf unused."""
    sys = root / "sys"
    disks = {"sda": ["sda1", "sda2"], "sdb": ["sdb2"], "sdc": [], "sdd": ["sdd1"], "sde": [], "sdf": [],
             "sdg": [], "nvme0n1": ["nvme0n1p1"]}
    (sys / "class" / "block").mkdir(parents=True)
    for disk, parts in disks.items():
        (sys / "devices" / disk).mkdir(parents=True)
        (sys / "class" / "block" / disk).symlink_to(f"../../devices/{disk}")
        for part in parts:
            (sys / "devices" / disk / part).mkdir()
            (sys / "devices" / disk / part / "partition").write_text("1\n")
            (sys / "class" / "block" / part).symlink_to(f"../../devices/{disk}/{part}")
    for holder, slave, uuid in (("md0", "sda2", ""), ("md0", "sdb2", ""), ("dm-0", "sdc", "LVM-abc"),
                                ("dm-1", "sde", "CRYPT-LUKS2-abc"), ("dm-2", "sdg", "mpath-3600abc")):
        virtual = sys / "devices" / "virtual" / holder
        (virtual / "slaves").mkdir(parents=True, exist_ok=True)
        (virtual / "slaves" / slave).write_text("")
        if uuid:
            (virtual / "dm").mkdir(exist_ok=True)
            (virtual / "dm" / "uuid").write_text(uuid + "\n")
        if not (sys / "class" / "block" / holder).exists():
            (sys / "class" / "block" / holder).symlink_to(f"../../devices/virtual/{holder}")
    dev = root / "dev"
    (dev / "mapper").mkdir(parents=True)
    for name in ("md0", "dm-0", "dm-1", "sda1", "sdd1", "nvme0n1p1"):
        (dev / name).write_text("")
    (dev / "mapper" / "vg-srv").symlink_to("../dm-0")
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "self" / "mounts").write_text(
        "/dev/md0 / ext4 rw 0 0\n/dev/sda1 /boot ext4 rw 0 0\n/dev/mapper/vg-srv /srv xfs rw 0 0\n"
        "/dev/nvme0n1p1 /var ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n")
    (root / "proc" / "swaps").write_text("Filename Type Size Used Priority\n/dev/sdd1 partition 8388604 0 -2\n")
    return root


def test_raid_lvm_swap_and_dm_crypt_disks_are_in_use_and_only_the_unused_disk_is_offered(tmp_path, crowbar, chef):
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_ROOT": str(fake_host(tmp_path / "host"))})
    assert wall["boot_disk"] == "sda"
    assert wall["disks_in_use"] == {
        "nvme0n1": ["mounted /var"], "sda": ["mounted /", "mounted /boot", "raid md0"],
        "sdb": ["mounted /", "raid md0"], "sdc": ["lvm dm-0", "mounted /srv"],
        "sdd": ["swap /dev/sdd1"], "sde": ["dm-crypt dm-1"], "sdg": ["multipath dm-2"]}
    facts = run_ohai()
    facts["block_device"] = {d: {"size": str(4000 * 1000**3 // 512), "removable": "0", "rotational": "1"}
                             for d in ("sda", "sdb", "sdc", "sdd", "sde", "sdf", "sdg", "nvme0n1", "md0", "dm-0", "dm-1", "dm-2")}
    facts["crowbar_wall"] = wall
    chef.nodes.create({"name": "raid.example.com", "chef_type": "node", "json_class": "Chef::Node",
                       "chef_environment": "_default", "run_list": [], "normal": {}, "default": {},
                       "override": {}, "automatic": facts})
    crowbar.machines.discover()
    machine = crowbar.machines.inventory().get("raid.example.com")
    assert [d.name for d in machine.disks if d.os_disk] == ["sda"]
    assert [d.name for d in machine.free_disks()] == ["sdf"]
    swift = crowbar.proposals.create("swift", "default")
    assert [d.name for d in swift.settings.devices["raid.example.com"]] == ["sdf"]


def test_plugin_reports_the_last_run_the_handler_recorded(tmp_path):
    from barclamp_sdk.node import RUN_HANDLER

    record = {"started_at": "2026-12-02T04:00:00Z", "ended_at": "2026-12-02T04:01:00Z", "success": False,
              "role_revision": 7, "error": "Chef::Exceptions::Package: apt-get failed"}
    path = tmp_path / "last_run.json"
    path.write_text(json.dumps(record))
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_LAST_RUN_FILE": str(path)})
    assert wall["last_run"] == record
    path.write_text("[1, 2]")
    wall = run_ohai("crowbar_wall", env={"CROWBAR_WALL_LAST_RUN_FILE": str(path)})
    assert "last_run" not in wall and any("ignored: not a JSON object" in n for n in wall["collector"]["notes"])
    checked = subprocess.run(["ruby", "-c", str(RUN_HANDLER)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "Syntax OK" in checked.stdout
