"""A simulated fleet: machines that behave as chef-client and boot scripts do.

* :meth:`Fleet.add` creates nodes the way chef-client's first run does (a
  client, then a node whose automatic attributes are the machine's Ohai data),
  from built-in :data:`PROFILES` of real-looking hardware;
* :meth:`Fleet.converge` is one chef-client run: GET the node, expand its run
  list through nested roles, merge role attributes, refresh Ohai data, PUT the
  whole node back (which is why server-side writes to nodes get lost);
  and reports how the run ended under ``crowbar_wall.last_run`` (as the
  shipped run handler does); :attr:`Fleet.failing` machines fail their runs;
* :meth:`Fleet.chef_client_daemon` runs chef-client on machines in the
  background, as the daemon on each machine does (:attr:`Fleet.stalled`
  machines never run);
* :meth:`Fleet.boot` walks machines through Crowbar's boot states as their
  boot scripts would, converging at each step, pausing where an operator must
  allocate.

The fleet writes only what a real machine writes: its node object (Ohai data,
and ``crowbar_wall`` facts it reports about itself), and state transitions
through the public API.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.model.jsondoc import deep_merge, now_iso
from barclamp_sdk.model.naming import check_node_name, node_role_name
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.runlist import expand

if TYPE_CHECKING:
    from barclamp_sdk.api import Crowbar

log = logging.getLogger(__name__)

GB = 1000**3


@dataclass(frozen=True)
class Disk:
    name: str
    size_gb: int
    rotational: bool = False
    model: str = "SSD"
    removable: bool = False


@dataclass(frozen=True)
class HardwareProfile:
    """What a kind of machine looks like to Ohai."""

    name: str
    description: str
    manufacturer: str
    product: str
    sockets: int
    cores_per_socket: int
    memory_gb: int
    disks: tuple[Disk, ...]
    cpu_flags: tuple[str, ...] = ("fpu", "sse", "sse2", "ssse3", "sse4_2", "avx", "avx2", "aes", "vmx")
    virtualization: Mapping[str, str] = field(default_factory=dict)
    platform: str = "ubuntu"
    platform_version: str = "22.04"
    nics: int = 2
    bmc: bool = True


def _disks(prefix: str, first: int, count: int, size_gb: int, rotational: bool, model: str) -> tuple[Disk, ...]:
    return tuple(Disk(f"{prefix}{chr(ord('a') + first + i)}", size_gb, rotational, model) for i in range(count))


PROFILES: dict[str, HardwareProfile] = {
    profile.name: profile
    for profile in (
        HardwareProfile(
            "compute", "2-socket server with VT-x and 6 disks", "Dell Inc.", "PowerEdge R640",
            sockets=2, cores_per_socket=16, memory_gb=384,
            disks=(Disk("sda", 480, model="SSDSC2KB480G8"),)
            + _disks("sd", 1, 5, 1920, False, "MZ7LH1T9HMLT"),
        ),
        HardwareProfile(
            "storage", "storage server with 12 disks", "Dell Inc.", "PowerEdge R740xd2",
            sockets=1, cores_per_socket=12, memory_gb=128,
            disks=(Disk("sda", 240, model="SSDSC2KB240G8"),)
            + _disks("sd", 1, 11, 8000, True, "ST8000NM000A"),
        ),
        HardwareProfile(
            "vm", "virtual machine (KVM guest, no VT-x)", "QEMU", "Standard PC (Q35 + ICH9, 2009)",
            sockets=1, cores_per_socket=4, memory_gb=16,
            disks=(Disk("vda", 40, model=""), Disk("vdb", 100, model="")),
            cpu_flags=("fpu", "sse", "sse2", "hypervisor"),
            virtualization={"system": "kvm", "role": "guest"}, nics=1, bmc=False,
        ),
        HardwareProfile(
            "xenserver", "XenServer host (bare-metal hypervisor)", "Dell Inc.", "PowerEdge R630",
            sockets=2, cores_per_socket=12, memory_gb=256,
            disks=(Disk("sda", 600, True, "ST600MM0088"), Disk("sdb", 600, True, "ST600MM0088")),
            virtualization={"system": "xen", "role": "host"},
            platform="xenserver", platform_version="8.2",
        ),
        HardwareProfile(
            "esx", "VMware ESXi host in a vCenter cluster", "Dell Inc.", "PowerEdge R650",
            sockets=2, cores_per_socket=20, memory_gb=512,
            disks=(Disk("sda", 240, model="BOSS-S1"),),
            virtualization={"system": "vmware", "role": "host"},
            platform="vmware", platform_version="8.0",
        ),
    )
}


def ohai_data(profile: HardwareProfile, name: str, index: int, *, domain: str,
              address: str) -> dict[str, Any]:
    """Automatic attributes as Ohai reports them for ``profile``."""
    cpus = profile.sockets * profile.cores_per_socket
    cpu: dict[str, Any] = {"total": cpus, "real": profile.sockets, "cores": cpus}
    for n in range(min(cpus, 4)):  # Ohai lists every CPU; four keep the data small
        cpu[str(n)] = {"model_name": "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz",
                       "flags": list(profile.cpu_flags), "physical_id": str(n % profile.sockets)}
    block = {
        d.name: {"size": str(d.size_gb * GB // 512), "removable": "1" if d.removable else "0",
                 "rotational": "1" if d.rotational else "0", "model": d.model,
                 "vendor": "ATA" if d.model else ""}
        for d in profile.disks
    }
    os_disk = profile.disks[0].name
    interfaces: dict[str, Any] = {"lo": {"addresses": {"127.0.0.1": {"family": "inet"}}}}
    for nic in range(profile.nics):
        mac = "52:54:%02x:%02x:%02x:%02x" % (nic, (index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF)
        addresses: dict[str, Any] = {mac.upper(): {"family": "lladdr"}}
        if nic == 0:
            addresses[address] = {"family": "inet", "netmask": "255.255.0.0", "prefixlen": "16"}
        interfaces[f"eth{nic}"] = {"addresses": addresses, "state": "up"}
    short = name.split(".")[0]
    first_mac = next(iter(interfaces["eth0"]["addresses"])) if "eth0" in interfaces else ""
    return {
        "fqdn": name, "hostname": short, "domain": domain, "ipaddress": address,
        "macaddress": first_mac,
        "platform": profile.platform, "platform_version": profile.platform_version,
        "platform_family": "debian" if profile.platform == "ubuntu" else profile.platform,
        "os": "linux", "kernel": {"name": "Linux", "release": "5.15.0-91-generic", "machine": "x86_64"},
        "cpu": cpu,
        "memory": {"total": f"{profile.memory_gb * 1024 * 1024}kB"},
        "block_device": block,
        "filesystem": {f"/dev/{os_disk}1": {"mount": "/", "fs_type": "ext4"},
                       f"/dev/{os_disk}2": {"mount": "/boot", "fs_type": "ext4"},
                       "tmpfs": {"mount": "/run", "fs_type": "tmpfs"}},
        "network": {"interfaces": interfaces, "default_interface": "eth0"},
        "dmi": {"system": {"manufacturer": profile.manufacturer, "product_name": profile.product,
                           "serial_number": f"SN{index:07d}"}},
        "virtualization": dict(profile.virtualization),
        "ohai_time": time.time(),
    }


class Fleet:
    """Simulated machines on a real Chef server."""

    def __init__(self, chef: ChefClient, *, domain: str = "example.com",
                 crowbar: Crowbar | None = None, concurrency: int = 8) -> None:
        self.chef = chef
        self.domain = domain
        self.crowbar = crowbar
        self.concurrency = concurrency
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        #: One key pair for every simulated client (server-side key generation is slow).
        self.client_public_key = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self._next_index: int | None = None
        #: Machines whose chef-client runs fail, with the error they report.
        self.failing: dict[str, str] = {}
        #: Machines whose chef-client never runs in :meth:`chef_client_daemon` (switched off, hung).
        self.stalled: set[str] = set()

    # -- machines appear -------------------------------------------------------------

    def _start_index(self) -> int:
        if self._next_index is None:
            taken = [n for n in self.chef.nodes.list() if n.startswith("d52-54-00-")]
            self._next_index = len(taken) + 1
        return self._next_index

    def add(
        self,
        count: int,
        profile: str = "compute",
        *,
        clients: bool = True,
        wall: Mapping[str, Any] | Callable[[str, int], Mapping[str, Any]] | None = None,
        names: Iterable[str] | None = None,
    ) -> list[str]:
        """Create ``count`` machines as their first chef-client run would.

        ``wall`` is what each node reports about itself under ``crowbar_wall``
        (BMC address, rack ...): a dict, or a function of (name, index).
        """
        if profile not in PROFILES:
            raise ValidationError(f"unknown hardware profile {profile!r}; profiles: {', '.join(PROFILES)}")
        hardware = PROFILES[profile]
        start = self._start_index()
        self._next_index = start + count
        given = list(names) if names is not None else None
        plan = []
        for offset in range(count):
            index = start + offset
            name = given[offset] if given else (
                "d52-54-00-%02x-%02x-%02x.%s" % ((index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF, self.domain))
            plan.append((name, index))

        def create(item: tuple[str, int]) -> str:
            name, index = item
            address = "10.%d.%d.%d" % (1 + (index >> 16) % 250, (index >> 8) & 0xFF, index & 0xFF)
            reported = wall(name, index) if callable(wall) else dict(wall or {})
            facts = {"boot_disk": hardware.disks[0].name, "hardware_profile": profile, **reported}
            if clients:
                try:
                    self.chef.clients.create({"name": name, "admin": False, "public_key": self.client_public_key})
                except Exception as exc:  # noqa: BLE001 - an existing client is fine
                    if getattr(exc, "status", None) != 409:
                        raise
            self.chef.nodes.create({
                "name": name, "chef_type": "node", "json_class": "Chef::Node",
                "chef_environment": "_default", "run_list": [],
                "normal": {"crowbar_wall": facts, "tags": []},
                "default": {}, "override": {},
                "automatic": ohai_data(hardware, name, index, domain=self.domain, address=address),
            })
            return name

        return self._parallel(create, plan)

    def _parallel(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return run_parallel(fn, items, workers=self.concurrency, name="fleet")

    # -- chef-client ---------------------------------------------------------------------

    def converge(
        self,
        name: str,
        *,
        wall: Mapping[str, Any] | None = None,
        pause: float = 0.0,
        cache: dict[str, dict[str, Any] | None] | None = None,
    ) -> dict[str, Any]:
        """One chef-client run on ``name``; returns the node as saved.

        ``pause`` holds the run between reading and saving the node, as a
        real run's convergence does (widening the multi-master window). The
        run's end is reported under ``crowbar_wall.last_run`` as the shipped
        handler (``barclamp_sdk/node/handlers``) reports it: when it started
        and ended, whether it succeeded (a machine in :attr:`failing` fails,
        saving its node as the handler does) and the revision of its
        ``crowbar-<node>`` role it ran with.
        """
        started = now_iso()
        node = self.chef.nodes.get(name)
        expansion = expand(self.chef, node.get("run_list") or [], cache=cache)
        roles, recipes, applied = expansion.roles, expansion.recipes, expansion.applied
        if pause:
            time.sleep(pause)
        default: dict[str, Any] = {}
        override: dict[str, Any] = {}
        for role in applied:
            default = deep_merge(default, role.get("default_attributes") or {})
            override = deep_merge(override, role.get("override_attributes") or {})
        node["default"] = default
        node["override"] = override
        automatic = node.setdefault("automatic", {})
        automatic["roles"] = roles
        automatic["recipes"] = recipes
        automatic["ohai_time"] = time.time()
        if wall:
            normal = node.setdefault("normal", {})
            normal["crowbar_wall"] = deep_merge(normal.get("crowbar_wall") or {}, wall)
        error = self.failing.get(name)
        report: dict[str, Any] = {
            "started_at": started, "ended_at": now_iso(), "success": error is None,
            "role_revision": int((default.get("crowbar") or {}).get("crowbar-revision") or 0)}
        if error is not None:
            report["error"] = error
        automatic.setdefault("crowbar_wall", {})["last_run"] = report
        self.chef.nodes.update(name, node)  # the whole node, as chef-client does
        return node

    @contextlib.contextmanager
    def chef_client_daemon(self, names: Iterable[str], *, interval: float = 1.0) -> Iterator[None]:
        """chef-client running on ``names`` in the background while the block runs.

        Each round, a machine runs when its ``crowbar-<node>`` role changed
        since its last run, or its last run failed (a daemon's next run);
        machines in :attr:`stalled` never run. One role read per machine
        and round keeps the load bounded.
        """
        machines = list(names)
        done = threading.Event()
        ran: dict[str, tuple[int, bool]] = {}

        def revision(name: str) -> int:
            role = self.chef.roles.find(node_role_name(name)) or {}
            return int(((role.get("default_attributes") or {}).get("crowbar") or {}).get("crowbar-revision") or 0)

        def one(name: str) -> None:
            if name in self.stalled:
                return
            current = revision(name)
            if ran.get(name) == (current, True):
                return
            node = self.converge(name)
            report = node["automatic"]["crowbar_wall"]["last_run"]
            ran[name] = (report["role_revision"], report["success"])

        def loop() -> None:
            while not done.is_set():
                try:
                    self._parallel(one, machines)
                except Exception as exc:  # noqa: BLE001 - a daemon keeps running, as chef-client does
                    log.warning("simulated chef-client: %s", exc)
                done.wait(interval)

        thread = threading.Thread(target=loop, name="chef-client-daemon", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def converge_all(self, names: Iterable[str]) -> None:
        """chef-client on many machines (in parallel, sharing a role cache)."""
        cache: dict[str, dict[str, Any] | None] = {}
        self._parallel(lambda n: self.converge(n, cache=cache), list(names))

    # -- boot scripts -----------------------------------------------------------------------

    def _api(self) -> Crowbar:
        if self.crowbar is None:
            raise ValidationError("this fleet has no Crowbar API to report transitions to")
        return self.crowbar

    def ready(self, count: int, profile: str = "compute", **options: Any) -> list[str]:
        """``count`` new machines taken to ``ready``: added, booted, allocated, booted again.

        ``options`` go to :meth:`add` (``clients``, ``wall``, ``names``).
        """
        names = self.add(count, profile, **options)
        self.boot(names)
        self._api().machines.allocate(names)
        self.boot(names)
        return names

    def boot(self, names: Iterable[str], *, until: str = "ready",
             progress: Callable[[int], None] | None = None,
             skipped: dict[str, str] | None = None, timings: dict[str, float] | None = None) -> dict[str, str]:
        """Boot machines as Crowbar's boot scripts do; returns each final state.

        A machine stops at ``discovered`` while it is not allocated (the pause),
        as Crowbar's ``wait_for_allocated`` did. A node the library refuses (its
        name, or its role belonging to another node) ends as ``"skipped"``, its
        reason in ``skipped``; the others boot on.

        The machines boot in step: each round, every machine still booting
        takes its next step in one :meth:`Machines.transition_many` call (one
        role read and write each, one lock per shard), then runs chef-client
        (in parallel), as a storm of machines booting together does. With
        ``timings``, the seconds spent in each are added to its keys
        ``"transitions"`` (the library's work) and ``"chef-client"`` (the
        simulated runs, which real machines do on their own).
        """
        from barclamp_sdk.model.states import LIFECYCLE

        api = self._api()
        stop = LIFECYCLE.index(until)
        names = list(dict.fromkeys(names))
        final: dict[str, str] = {}
        bad: dict[str, str] = {}
        for name in names:
            try:
                check_node_name(name)
            except ValidationError as exc:
                bad[name] = str(exc)
        known = api.machines.records([n for n in names if n not in bad])
        position: dict[str, int] = {}
        allocated: dict[str, bool] = {}

        def skip(name: str, reason: str) -> None:
            if skipped is None:
                log.warning("node %r is not booted: %s", name, reason)
            else:
                skipped[name] = reason
            final[name] = "skipped"

        def finish(name: str) -> None:
            position.pop(name, None)
            if progress is not None:
                progress(1)

        for name in names:
            if name in bad:
                skip(name, bad[name])
                finish(name)
                continue
            record = known.get(name)
            current = record.state if record is not None else ""
            final[name] = current
            allocated[name] = bool(record and record.allocated)
            position[name] = LIFECYCLE.index(current) + 1 if current in LIFECYCLE else 0
        while True:
            changes = {}
            for name, at in sorted(position.items()):
                step = LIFECYCLE[at] if at <= stop else None
                if step is None or (step == "hardware-installing" and not allocated[name]):
                    finish(name)  # done, or paused: waits for an operator to allocate it
                else:
                    changes[name] = step
            if not changes:
                break
            started = time.perf_counter()
            report = api.machines.transition_many(changes)
            moved_at = time.perf_counter()
            for name, error in report.failed.items():
                if not isinstance(error, (ValidationError, NotFoundError)):
                    raise error
                skip(name, str(error))
                finish(name)
            moved = []
            for name, record in report.records.items():
                final[name] = record.state
                allocated[name] = record.allocated
                if record.state == "problem":
                    finish(name)
                else:
                    moved.append(name)
                    position[name] += 1
            self._parallel(self.converge, moved)
            if timings is not None:
                timings["transitions"] = timings.get("transitions", 0.0) + moved_at - started
                timings["chef-client"] = timings.get("chef-client", 0.0) + time.perf_counter() - moved_at
        return {name: final[name] for name in names}

    def node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.chef.nodes.get(name))
