"""The cluster inventory: typed facts read from Ohai data, tolerant of gaps.

Facts owned by a node come from its node object: Ohai's automatic attributes
and what the node reports about itself under ``crowbar_wall`` (BMC address,
boot disk, rack, hypervisor host). Crowbar's own view of the machine (state,
allocation, roles, claimed disks) comes from its ``crowbar-<node>`` role.

Both are read with partial search, so only the attributes below travel:
:data:`NODE_KEYS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from barclamp_sdk.model.cluster import MachineRecord
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.platforms import classify_virtualization, os_of, platform_refusal

#: Attributes read from each node (partial search key map).
NODE_KEYS: dict[str, list[str]] = {
    "name": ["name"],
    "fqdn": ["fqdn"],
    "platform": ["platform"],
    "platform_version": ["platform_version"],
    "platform_family": ["platform_family"],
    "os": ["os"],
    "cloud": ["cloud"],
    "cpu_total": ["cpu", "total"],
    "cpu_real": ["cpu", "real"],
    "cpu_flags": ["cpu", "0", "flags"],
    "memory_total": ["memory", "total"],
    "block_device": ["block_device"],
    "filesystem": ["filesystem"],
    "interfaces": ["network", "interfaces"],
    "ipaddress": ["ipaddress"],
    "dmi_system": ["dmi", "system"],
    "virtualization": ["virtualization"],
    "crowbar_wall": ["crowbar_wall"],
}


_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?b?)\s*$", re.IGNORECASE)
_PARTITION = re.compile(r"(.*?\d)p\d+|(.*?[a-z])\d+")
_WHOLE_DISK = re.compile(r"^(nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+)$")  # names ending in a digit


def parse_size(value: Any) -> int:
    """Ohai memory sizes ("16384000kB") to bytes; 0 when unreadable."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return _int(value)
    match = _SIZE.match(str(value)) if value is not None else None
    if not match:
        return 0
    return int(float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1))


def _int(value: Any, default: int = 0) -> int:
    """A count or size: ``default`` when unreadable, infinite or negative."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return number if number >= 0 else default


def _flag(value: Any) -> bool | None:
    if value is None:
        return None
    return str(value).strip().lower() in ("1", "true", "yes")


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def disk_of(device: str) -> str:
    """The whole disk a partition lives on: sda1 -> sda, nvme0n1p2 -> nvme0n1."""
    name = device.rsplit("/", 1)[-1]
    if _WHOLE_DISK.match(name):
        return name
    match = _PARTITION.fullmatch(name)
    if not match:
        return name
    return match.group(1) or match.group(2)


class BlockDevice(BaseModel):
    """A disk the machine has."""

    model_config = ConfigDict(frozen=True)

    name: str
    size_bytes: int = 0
    removable: bool = False
    rotational: bool | None = None
    model: str = ""
    vendor: str = ""
    os_disk: bool = False
    #: Why the OS uses it (mounted, swap, a RAID set, LVM), as the node reports.
    in_use: tuple[str, ...] = ()

    @property
    def size_gb(self) -> float:
        return round(self.size_bytes / 1000**3, 1)


class Interface(BaseModel):
    """A network interface and its addresses."""

    model_config = ConfigDict(frozen=True)

    name: str
    mac: str | None = None
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    #: A NIC (not a bridge, bond, veth, tun/tap, ifb, VLAN ...): see :func:`is_physical`.
    physical: bool = True
    #: Link speed Ohai reports (ethtool), in Mb/s; 0 when unknown.
    speed: int = 0


#: Drivers (``ethtool -i``) of interfaces no NIC is behind.
VIRTUAL_DRIVERS = frozenset({"bridge", "bonding", "team", "veth", "tun", "ifb", "dummy", "macvlan", "macvtap",
                             "ipvlan", "vxlan", "geneve", "openvswitch", "802.1Q VLAN Support", "wireguard"})
#: Ohai's ``type`` (the name's letters) of virtual interfaces, when ethtool told nothing.
VIRTUAL_TYPES = frozenset({"lo", "br", "virbr", "bond", "team", "veth", "docker", "tap", "tun", "ifb", "vnet",
                           "dummy", "ovs", "vxlan", "macvtap", "cni", "flannel", "cali", "weave", "wg"})


def is_physical(name: str, info: Mapping[str, Any]) -> bool:
    """Whether Ohai's ``network.interfaces.<name>`` is a NIC: Ethernet, and a device behind it.

    With ``driver_info`` (Ohai runs ``ethtool -i``): a bus address and no virtual
    driver; without: no virtual ``type`` (``br``, ``bond``, ``veth``, ``docker`` ...)
    and no VLAN name (``eth0.100``, ``vlan@eth0``).
    """
    encapsulation = info.get("encapsulation")
    if name == "lo" or (encapsulation is not None and encapsulation != "Ethernet"):
        return False
    driver = info.get("driver_info")
    if isinstance(driver, Mapping) and ("bus_info" in driver or "driver" in driver):
        bus = str(driver.get("bus_info") or "").strip()
        return bus not in ("", "N/A", "tun") and str(driver.get("driver") or "") not in VIRTUAL_DRIVERS
    kind = str(info.get("type") or re.sub(r"[^a-z].*", "", name.lower()))
    return kind not in VIRTUAL_TYPES and "." not in name and "@" not in name


class BMCInfo(BaseModel):
    """How to reach a machine's BMC (reported by the node under ``crowbar_wall.bmc``)."""

    model_config = ConfigDict(frozen=True)

    address: str
    ipmi_port: int = 623
    redfish_port: int | None = None
    redfish_system: str | None = None


class Machine(BaseModel):
    """One machine: Ohai facts plus Crowbar's view from its role."""

    model_config = ConfigDict(frozen=True)

    name: str
    fqdn: str = ""
    platform: str = ""
    platform_version: str = ""
    platform_family: str = ""
    os: str = ""
    cloud_provider: str = ""
    cpu_count: int = 0
    cpu_sockets: int = 0
    cpu_flags: frozenset[str] = frozenset()
    memory_bytes: int = 0
    disks: tuple[BlockDevice, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    ipaddress: str = ""
    manufacturer: str = ""
    product: str = ""
    serial: str = ""
    virtualization_system: str = ""
    virtualization_role: str = ""
    #: How the virtualisation was recognised: "ohai", "dmi", "cloud" or "".
    virtualization_source: str = ""
    bmc: BMCInfo | None = None
    rack: str = ""
    #: The kind of hardware the node says it is (``crowbar_wall.hardware_profile``; the
    #: simulated fleet reports its profile: ``compute``, ``storage``, ``vm`` ...), "" if none.
    hardware_profile: str = ""
    hypervisor_host: str = ""
    # Crowbar's view (from the crowbar-<node> role)
    state: str = ""
    allocated: bool = False
    roles: tuple[str, ...] = ()
    claimed_disks: Mapping[str, str] = {}
    pending: Mapping[str, Any] = {}
    #: Facts the node reported in a shape that could not be read (each names
    #: the attribute); the fact takes its empty default meanwhile.
    fact_problems: tuple[str, ...] = ()

    @property
    def role_name(self) -> str:
        return node_role_name(self.name)

    @property
    def can_virtualize(self) -> bool:
        """Hardware virtualisation (Intel VT-x ``vmx`` or AMD-V ``svm``)."""
        return bool({"vmx", "svm"} & self.cpu_flags)

    @property
    def is_virtual(self) -> bool:
        """The machine is itself a virtual machine (a guest)."""
        return self.virtualization_role == "guest"

    @property
    def memory_gb(self) -> float:
        return round(self.memory_bytes / 1024**3, 1)

    @property
    def data_disks(self) -> tuple[BlockDevice, ...]:
        """Disks that are neither removable, the OS disk, nor in use by the OS."""
        return tuple(d for d in self.disks if not d.os_disk and not d.removable and not d.in_use)

    def free_disks(self, owner: str | None = None) -> tuple[BlockDevice, ...]:
        """Data disks not claimed by anyone but ``owner``."""
        return tuple(d for d in self.data_disks
                     if self.claimed_disks.get(d.name) in (None, owner))

    @property
    def storage_heavy(self) -> bool:
        """Many data disks: a machine built for storage."""
        return len(self.data_disks) >= 8

    def disk(self, name: str) -> BlockDevice | None:
        return next((d for d in self.disks if d.name == name), None)

    @property
    def os_family(self) -> str:
        """The operating system (``linux``, ``windows``, ``darwin``, ``aix`` ...), "" if unknown."""
        return os_of(self.platform, self.os)

    def platform_refusal(self, allowed: Mapping[str, str] | None,
                         excluded: Mapping[str, str] | None = None) -> str | None:
        """Why Crowbar-style ``platform`` / ``exclude_platform`` constraints refuse this machine."""
        return platform_refusal(self.platform, self.platform_version, self.platform_family, self.os,
                                allowed=allowed, excluded=excluded or {})


_VIRTUAL_DEVICE = re.compile(r"^(loop|ram|dm-|sr|fd|md|zram|nbd)")


def _disks(block: Any, filesystem: Any, wall: dict[str, Any]) -> tuple[BlockDevice, ...]:
    devices = _dict(block)
    os_disk = _str(wall.get("boot_disk")) or _root_disk(filesystem)
    in_use = {str(k): tuple(str(w) for w in v) if isinstance(v, list) else (str(v),)
              for k, v in _dict(wall.get("disks_in_use")).items() if v}
    for path, owner in _dict(wall.get("claimed_disks")).items():  # written by Crowbar 1.x recipes
        in_use.setdefault(disk_of(str(path)), (f"claimed by {owner} (crowbar_wall.claimed_disks)",))
    found = []
    for name in sorted(devices):
        info = _dict(devices[name])
        if _VIRTUAL_DEVICE.match(name):
            continue  # not a physical disk
        found.append(BlockDevice.model_construct(  # typed by the readers above: 24 disks x 20,000 machines
            name=name,
            size_bytes=_int(info.get("size")) * 512,
            removable=bool(_flag(info.get("removable"))),
            rotational=_flag(info.get("rotational")),
            model=_str(info.get("model")).strip(),
            vendor=_str(info.get("vendor")).strip(),
            os_disk=(name == disk_of(os_disk)) if os_disk else False,
            in_use=in_use.get(name, ()),
        ))
    if found and not any(d.os_disk for d in found):
        # Unknown boot disk: never offer the first fixed disk for data.
        first = next((d for d in found if not d.removable), None)
        if first is not None:
            found = [d.model_copy(update={"os_disk": True}) if d is first else d for d in found]
    return tuple(found)


def _root_disk(filesystem: Any) -> str:
    fs = _dict(filesystem)
    by_mount = _dict(fs.get("by_mountpoint"))
    if by_mount:  # Ohai >= 15 layout
        devices = _dict(by_mount.get("/")).get("devices")
        if isinstance(devices, list) and devices and str(devices[0]).startswith("/dev/"):
            return str(devices[0])
        return ""
    for device, info in fs.items():
        if _dict(info).get("mount") == "/" and str(device).startswith("/dev/"):
            return str(device)
    return ""


def _interfaces(value: Any) -> tuple[Interface, ...]:
    found = []
    for name, info in sorted(_dict(value).items()):
        if name == "lo":
            continue
        mac = None
        ipv4, ipv6 = [], []
        for address, details in _dict(_dict(info).get("addresses")).items():
            family = _dict(details).get("family")
            if family == "lladdr":
                mac = address.lower()
            elif family == "inet":
                ipv4.append(address)
            elif family == "inet6":
                ipv6.append(address)
        details = _dict(info)
        found.append(Interface.model_construct(name=name, mac=mac, ipv4=tuple(ipv4), ipv6=tuple(ipv6),
                                               physical=is_physical(name, details),
                                               speed=_int(details.get("link_speed"))))
    return tuple(found)


def _bmc(wall: dict[str, Any]) -> BMCInfo | None:
    bmc = _dict(wall.get("bmc")) or _dict(wall.get("ipmi"))
    address = _str(bmc.get("address"))
    if not address:
        return None
    redfish_port = bmc.get("redfish_port")
    return BMCInfo(
        address=address,
        ipmi_port=_int(bmc.get("ipmi_port") or bmc.get("port"), 623),
        redfish_port=_int(redfish_port) if redfish_port else None,
        redfish_system=_str(bmc.get("redfish_system")) or None,
    )


def _fact_problems(node: Mapping[str, Any]) -> tuple[str, ...]:
    """What in a node's facts has an unreadable shape, by Ohai attribute path."""
    problems = []

    def where(key: str) -> str:
        return ".".join(NODE_KEYS.get(key, [key]))

    def kind(value: Any) -> str:
        return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) \
            else f"{type(value).__name__} {value!r:.40}"

    for key in ("block_device", "filesystem", "interfaces", "dmi_system", "virtualization", "cloud",
                "crowbar_wall"):
        value = node.get(key)
        if value is not None and not isinstance(value, dict):
            problems.append(f"{where(key)} should be a mapping, not {kind(value)}")
    for key in ("cpu_total", "cpu_real"):
        value = node.get(key)
        if value is not None and (isinstance(value, bool) or _int(value, -1) < 0):
            problems.append(f"{where(key)} should be a count, not {kind(value)}")
    memory = node.get("memory_total")
    if memory is not None and parse_size(memory) <= 0:
        problems.append(f"memory.total should be a size like '16384000kB', not {kind(memory)}")
    flags = node.get("cpu_flags")
    if flags is not None and not isinstance(flags, list):
        problems.append(f"cpu.0.flags should be a list, not {kind(flags)}")
    for name, info in _dict(node.get("block_device")).items():
        if not isinstance(info, dict):
            problems.append(f"block_device.{name} should be a mapping, not {kind(info)}")
        elif info.get("size") is not None and _int(info.get("size"), -1) < 0:
            problems.append(f"block_device.{name}.size should be a number of sectors, not {kind(info['size'])}")
    in_use = _dict(node.get("crowbar_wall")).get("disks_in_use")
    if in_use is not None and not isinstance(in_use, dict):
        problems.append(f"crowbar_wall.disks_in_use should be a mapping of disk to reasons, not {kind(in_use)}")
    for key in ("name", "fqdn", "platform", "platform_version", "platform_family", "os", "ipaddress"):
        value = node.get(key)
        if value is not None and not isinstance(value, str):
            problems.append(f"{where(key)} should be text, not {kind(value)}")
    return tuple(problems)


def machine_from_search(node: Mapping[str, Any], record: MachineRecord | None) -> Machine:
    """Build a :class:`Machine` from a node's partial-search row and its Crowbar record.

    Odd shapes are tolerated.

    A fact of the wrong shape takes its empty default and is named in
    :attr:`Machine.fact_problems`, so one odd node never breaks an inventory.
    """
    wall = _dict(node.get("crowbar_wall"))
    dmi = _dict(node.get("dmi_system"))
    virt = classify_virtualization(_dict(node.get("virtualization")), dmi, _dict(node.get("cloud")))
    flags = node.get("cpu_flags")
    return Machine.model_construct(  # every value typed by the readers above: no validation per machine
        name=_str(node.get("name")),
        fqdn=_str(node.get("fqdn")),
        platform=_str(node.get("platform")),
        platform_version=_str(node.get("platform_version")),
        platform_family=_str(node.get("platform_family")),
        os=_str(node.get("os")),
        cloud_provider=_str(_dict(node.get("cloud")).get("provider")),
        cpu_count=_int(node.get("cpu_total")),
        cpu_sockets=_int(node.get("cpu_real")),
        cpu_flags=frozenset(str(f) for f in flags) if isinstance(flags, list) else frozenset(),
        memory_bytes=parse_size(node.get("memory_total")),
        disks=_disks(node.get("block_device"), node.get("filesystem"), wall),
        interfaces=_interfaces(node.get("interfaces")),
        ipaddress=_str(node.get("ipaddress")),
        manufacturer=_str(dmi.get("manufacturer")).strip(),
        product=_str(dmi.get("product_name")).strip(),
        serial=_str(dmi.get("serial_number")).strip(),
        virtualization_system=virt.system,
        virtualization_role=virt.role,
        virtualization_source=virt.source,
        bmc=_bmc(wall),
        rack=_str(wall.get("rack")),
        hardware_profile=_str(wall.get("hardware_profile")),
        hypervisor_host=_str(wall.get("hypervisor_host")),
        state=record.state if record else "",
        allocated=record.allocated if record else False,
        roles=tuple(sorted(record.entries)) if record else (),
        claimed_disks=dict(record.claims) if record else {},
        pending={k: list(v) for k, v in record.pending.items()} if record else {},
        fact_problems=_fact_problems(node),
    )


UNUSABLE_STATES = frozenset({"delete", "delete-final", "reset", "problem"})


class Inventory:
    """Every Crowbar machine with its facts; what ``create_proposal`` reads."""

    def __init__(self, machines: Iterable[Machine]) -> None:
        self._machines = {m.name: m for m in sorted(machines, key=lambda m: m.name)}

    def __iter__(self) -> Iterator[Machine]:
        return iter(self._machines.values())

    def __len__(self) -> int:
        return len(self._machines)

    def __contains__(self, name: object) -> bool:
        return name in self._machines

    def get(self, name: str) -> Machine | None:
        return self._machines.get(name)

    def names(self) -> list[str]:
        return list(self._machines)

    def candidates(self) -> list[Machine]:
        """Machines a new proposal may use (not being deleted, reset or broken)."""
        return [m for m in self if m.state not in UNUSABLE_STATES]
