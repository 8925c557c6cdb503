"""ceph: distributed block and object storage.

Monitors are an odd number (1, 3 or 5 by cluster size) on machines not built
for storage; OSDs go on machines with unused disks, storage servers first,
and the proposal lists exactly which devices on each machine become OSDs
(``osd_devices``): data, not code. The fsid is generated; the monitor and
admin keys are generated in cephx's own format and kept in the secrets store.
Key names follow Crowbar's ceph barclamp (``config.fsid``, ``monitor-secret``,
``admin-secret``, ``disk_mode``, ``osd.journal_size``, ``radosgw.ssl.*``);
docs/reference.md lists each Crowbar key that is elsewhere.
"""

from __future__ import annotations

import base64
import os
import struct
import time
import uuid
from typing import Literal

from pydantic import Field

from barclamp_sdk import LINUX, Attributes, Barclamp, Element, Secret, general_purpose, odd_quorum, short


def cephx_key() -> str:
    """A new cephx secret as ceph-authtool prints it (type, created, 16 bytes)."""
    secret = os.urandom(16)
    return base64.b64encode(struct.pack("<HIIH", 1, int(time.time()), 0, len(secret)) + secret).decode()


class CephConfig(Attributes):
    fsid: str = ""
    public_network: str = Field("", alias="public-network")
    cluster_network: str = Field("", alias="cluster-network")


class Osd(Attributes):
    """OSD journals (Crowbar's ``osd``): journal devices are listed, like ``osd_devices``."""

    journal_size: int = Field(5120, ge=0, description="MB")
    journal_devices: list[str] = []
    use_ssd_for_journal: bool = True
    min_size_gb: int = Field(20, ge=0)


class RadosgwSsl(Attributes):
    enabled: bool = False
    certfile: str = "/etc/apache2/ssl.crt/ceph-radosgw.crt"
    keyfile: str = "/etc/apache2/ssl.key/ceph-radosgw.key"
    generate_certs: bool = False
    insecure: bool = False


class Radosgw(Attributes):
    ssl: RadosgwSsl = RadosgwSsl()


class CephFs(Attributes):
    fs_name: str = "cephfs"
    data_pool: str = "cephfs_data"
    metadata_pool: str = "cephfs_metadata"


class CephAttributes(Attributes):
    #: Crowbar's ``master`` flag, carried for cookbooks that read it (the library does not use it).
    master: bool = False
    clustername: str = Field("ceph", min_length=1)
    disk_mode: Literal["all", "first"] = "all"
    config: CephConfig = CephConfig()
    monitor_secret: Secret = Field(None, alias="monitor-secret")
    admin_secret: Secret = Field(None, alias="admin-secret")
    pool_size: int = Field(3, ge=1, le=10)
    osd_devices: dict[str, list[str]] = {}
    osd: Osd = Osd()
    radosgw: Radosgw = Radosgw()
    cephfs: CephFs = CephFs()
    keystone_instance: str = "none"
    #: The keystone user of the radosgw (Swift API), and the network clients reach ceph on.
    service_user: str = "ceph"
    service_password: Secret = None
    client_network: str = "public"


class Ceph(Barclamp):
    name = "ceph"
    display_name = "Ceph"
    description = "Ceph distributed block and object storage"
    order = 80
    member = ("storage",)
    Attributes = CephAttributes
    elements = (
        Element("ceph-mon", recipes=("ceph::mon",), platform=LINUX, priority=80, min=1, odd=True, max=7),
        Element("ceph-osd", recipes=("ceph::osd",), platform=LINUX, priority=81, min=2),
        Element("ceph-radosgw", recipes=("ceph::radosgw",), platform=LINUX, priority=82, max=3),
    )
    element_order = (("ceph-mon",), ("ceph-osd",), ("ceph-radosgw",))
    #: Monitors and OSDs talk on the storage network (public and cluster traffic), radosgw serves public.
    networks = {"ceph-mon": ("storage",), "ceph-osd": ("storage",), "ceph-radosgw": ("storage", "public")}
    #: Each OSD machine's disks go into its own crowbar-<node> role (node[:ceph][:osd_devices][node.name]).
    node_attributes = ("osd_devices",)

    def create_proposal(self, proposal, inventory, ctx):
        machines = general_purpose(inventory.candidates())
        settings = proposal.settings
        with_disks = {m.name: ctx.free_disks(m, proposal) for m in machines}
        osds = [m for m in machines if m.storage_heavy and with_disks[m.name]]
        reason = "storage servers with unused disks"
        if len(osds) < 2:
            chosen = {m.name for m in osds}
            extra = sorted((m for m in machines if m.name not in chosen and with_disks[m.name]),
                           key=lambda m: (m.is_virtual, -len(with_disks[m.name]), m.name))
            osds += extra[:2 - len(osds)]
            reason = ("too few storage servers: machines with the most unused disks were added" if osds else
                      "no machine has a free disk (each is the OS disk, in use by the OS or claimed)")
        for machine in osds:
            devices = [d.name for d in with_disks[machine.name]]
            settings.osd_devices[machine.name] = devices[:1] if settings.disk_mode == "first" else devices
        proposal.assign("ceph-osd", *[m.name for m in osds])
        proposal.note(f"OSDs on {short([m.name for m in osds])} ({reason}); osd_devices lists each disk used")
        count = odd_quorum(len(machines))
        ranked = sorted(machines, key=lambda m: (m.storage_heavy, -m.memory_bytes, m.name))
        mons = ranked[:count]
        proposal.assign("ceph-mon", *[m.name for m in mons])
        proposal.note(f"{count} monitor(s) for {len(machines)} machines (an odd number keeps a quorum), "
                      f"on {short([m.name for m in mons])}: machines not built for storage first")
        settings.pool_size = max(1, min(3, len(osds)))
        settings.config.fsid = str(uuid.uuid4())
        settings.monitor_secret = cephx_key()
        settings.admin_secret = cephx_key()
        proposal.settings = settings
        proposal.note("ceph-radosgw (S3/Swift gateway) is not placed; add it with "
                      f"`crowbar ceph proposal edit {proposal.name} --set elements.ceph-radosgw=MACHINE`")

    def refresh(self, proposal, ctx):
        settings = proposal.settings
        self._networks(settings, ctx)
        proposal.settings = settings

    @staticmethod
    def _networks(settings, ctx) -> None:
        """public-network and cluster-network: the committed storage network, when there is one."""
        storage = ctx.network("storage")
        if storage is not None:
            settings.config.public_network = settings.config.cluster_network = str(storage.subnet)

    def prepare(self, proposal, ctx):
        settings = proposal.settings
        self._networks(settings, ctx)
        if not settings.config.fsid:
            settings.config.fsid = str(uuid.uuid4())
        settings.monitor_secret = settings.monitor_secret or cephx_key()
        settings.admin_secret = settings.admin_secret or cephx_key()
        proposal.settings = settings

    def claims(self, proposal):
        osds = set(proposal.elements.get("ceph-osd", []))
        return {node: devices for node, devices in proposal.settings.osd_devices.items() if node in osds}

    def validate(self, proposal, ctx):
        settings = proposal.settings
        osds = proposal.elements.get("ceph-osd", [])
        for node in osds:
            if not settings.osd_devices.get(node) and not ctx.draft:
                yield f"{node} is an OSD machine but osd_devices lists no disk for it"
        placed = set(osds)
        for node in settings.osd_devices:
            if node not in placed:
                yield f"osd_devices names {node}, which is not in ceph-osd"
        if osds and len(osds) < settings.pool_size and not ctx.draft:
            yield f"pool_size {settings.pool_size} needs at least {settings.pool_size} OSD machines, has {len(osds)}"
