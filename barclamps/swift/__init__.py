"""swift: OpenStack object storage.

Disk selection is data, not code: ``devices`` lists, for each storage
machine, the disks it claims with each one's zone and weight (its size in
TB). Crowbar stored Ruby expressions evaluated on the node instead
(``disk_*_expr``); the other settings keep the keys of Crowbar's swift
templates (docs/reference.md lists each one that is elsewhere). Zones
are balanced across machines and, where machines report their rack, across
racks (a rack is a failure domain). Elements keep Crowbar's order: storage
runs again after the rings are computed.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from typing import Literal

from pydantic import Field

from barclamp_sdk import LINUX, Attributes, Barclamp, Element, Link, Secret, best_controller, general_purpose, short


class Device(Attributes):
    name: str
    zone: int = Field(ge=1)
    weight: float = Field(gt=0)


class Enabled(Attributes):
    enabled: bool = False


class DomainRemap(Enabled):
    path_root: str = "v1"
    storage_domain: str = "swift.storage.crowbar.org"


class CnameLookup(Enabled):
    storage_domain: str = "swift.storage.crowbar.org"
    lookup_depth: int = Field(1, ge=1)


class RateLimit(Enabled):
    clock_accuracy: int = Field(1000, ge=1)
    max_sleep_time_seconds: int = Field(60, ge=0)
    log_sleep_time_seconds: int = Field(0, ge=0)
    rate_buffer_seconds: int = Field(5, ge=0)
    account_ratelimit: int = Field(0, ge=0)
    account_whitelist: str = ""
    account_blacklist: str = ""
    container_ratelimit_size: str = "100=100,200=50,500=20"


class Bulk(Attributes):
    enabled: bool = True
    max_containers_per_extraction: int = Field(10000, ge=1)
    max_failed_extractions: int = Field(1000, ge=0)
    max_deletes_per_request: int = Field(10000, ge=1)
    max_failed_deletes: int = Field(1000, ge=0)
    yield_frequency: int = Field(10, ge=1)


class CrossDomain(Enabled):
    cross_domain_policy: str = '<allow-access-from domain="*" secure="false" />'


class Middlewares(Attributes):
    """Proxy middlewares, each ``<name>.enabled`` plus its options (Crowbar's keys)."""

    staticweb: Enabled = Enabled()
    tempurl: Enabled = Enabled()
    formpost: Enabled = Enabled()
    domain_remap: DomainRemap = DomainRemap()
    cname_lookup: CnameLookup = CnameLookup()
    s3: Enabled = Enabled()
    ratelimit: RateLimit = RateLimit()
    bulk: Bulk = Bulk()
    crossdomain: CrossDomain = CrossDomain()


class Dispersion(Attributes):
    """swift-dispersion-report's keystone account and sampling."""

    service_user: str = "dispersion"
    service_password: Secret = None
    service_tenant: str = "dispersion"
    dispersion_coverage: float = Field(0.1, gt=0, le=100, description="percent of partitions sampled")
    retries: int = Field(5, ge=0)
    concurrency: int = Field(25, ge=1)


class Ssl(Attributes):
    enabled: bool = False
    certfile: str = "/etc/swift/cert.crt"
    keyfile: str = "/etc/swift/cert.key"
    generate_certs: bool = False
    insecure: bool = False


class ContainerSync(Attributes):
    key: Secret = None
    key2: Secret = None


class SwiftAttributes(Attributes):
    replicas: int = Field(3, ge=1, le=10)
    partitions: int = Field(16, ge=6, le=24, description="ring partition power")
    zones: int = Field(3, ge=1, le=64)
    min_part_hours: int = Field(24, ge=0, le=168)
    cluster_hash: Secret = None
    #: swauth's admin password (generated when a proposal uses swauth).
    cluster_admin_pw: Secret = None
    auth_method: Literal["keystone", "swauth"] = "keystone"
    keystone_instance: str = "none"
    keystone_service_user: str = "swift"
    service_password: Secret = None
    keystone_delay_auth_decision: bool = False
    allow_versions: bool = False
    reseller_prefix: str = "AUTH_"
    #: The system user and group swift's services run as.
    user: str = "swift"
    group: str = "swift"
    debug: bool = False
    use_slog: bool = False
    slog_account: str = "system_stats"
    slog_user: str = "swift_sys"
    slog_passwd: Secret = None
    frontend: Literal["native", "apache", "uwsgi"] = "native"
    replication_interval: int = Field(60, ge=1)
    max_header_size: int = Field(16384, ge=1024)
    middlewares: Middlewares = Middlewares()
    dispersion: Dispersion = Dispersion()
    ssl: Ssl = Ssl()
    container_sync: ContainerSync = ContainerSync()
    devices: dict[str, list[Device]] = {}


def balanced_zones(machines: list, zones: int) -> dict[str, int]:
    """A zone per machine, zones within one machine of each other in size.

    Where every machine reports its rack and whole racks fill the zones evenly,
    each rack goes whole into one zone (a rack is a failure domain); otherwise
    machines go round-robin, alternating racks, so each zone spans racks evenly.
    """
    if not machines:
        return {}
    racks: dict[str, list] = defaultdict(list)
    for machine in sorted(machines, key=lambda m: m.name):
        racks[machine.rack].append(machine)
    if "" not in racks and len(racks) >= zones:
        load = {zone: 0 for zone in range(1, zones + 1)}
        placed = {}
        for rack in sorted(racks, key=lambda r: (-len(racks[r]), r)):
            zone = min(load, key=lambda z: (load[z], z))
            load[zone] += len(racks[rack])
            placed.update({m.name: zone for m in racks[rack]})
        if max(load.values()) - min(load.values()) <= 1:
            return placed
    order = [m for depth in range(max(len(v) for v in racks.values()))
             for rack in sorted(racks) for m in racks[rack][depth:depth + 1]]
    return {m.name: index % zones + 1 for index, m in enumerate(order)}


class Swift(Barclamp):
    name = "swift"
    display_name = "Swift"
    description = "OpenStack object storage"
    order = 80
    member = ("openstack", "storage")
    Attributes = SwiftAttributes
    #: Storage servers and proxies replicate and serve objects on the storage network; proxies also on public.
    networks = {"swift-storage": ("storage",), "swift-proxy": ("storage", "public")}
    elements = (
        Element("swift-ring-compute", recipes=("swift::ring-compute",), platform=LINUX, priority=80, count=1),
        Element("swift-proxy", recipes=("swift::proxy",), platform=LINUX, priority=81, min=1),
        Element("swift-storage", recipes=("swift::storage",), platform=LINUX, priority=82, min=1),
        Element("swift-dispersion", recipes=("swift::dispersion",), platform=LINUX, priority=83, max=1),
    )
    element_order = (("swift-storage",), ("swift-ring-compute",), ("swift-proxy",), ("swift-dispersion",),
                     ("swift-storage",))
    links = (Link("keystone", "keystone_instance", optional=True),)
    #: Each storage machine's disks go into its own crowbar-<node> role (node[:swift][:devices][node.name]).
    node_attributes = ("devices",)

    def create_proposal(self, proposal, inventory, ctx):
        machines = general_purpose(inventory.candidates())
        free = {m.name: ctx.free_disks(m, proposal) for m in machines}
        storage = [m for m in machines if m.storage_heavy and free[m.name]]
        if not storage:
            storage = sorted((m for m in machines if free[m.name]), key=lambda m: (m.is_virtual, -len(free[m.name]), m.name))
            proposal.note("no storage servers with free disks: using the machines with the most unused disks"
                          if storage else
                          "no machine has a free disk (each is the OS disk, in use by the OS or claimed): "
                          "swift-storage stays empty until machines with free disks are discovered")
        settings = proposal.settings
        settings.zones = max(1, min(3, len(storage)))
        settings.replicas = min(3, settings.zones)
        zone_of = balanced_zones(storage, settings.zones)
        for machine in storage:
            settings.devices[machine.name] = [
                Device(name=d.name, zone=zone_of[machine.name], weight=max(0.01, round(d.size_bytes / 1e12, 2)))
                for d in free[machine.name]]
        proposal.assign("swift-storage", *[m.name for m in storage])
        proposal.note(f"storage on {short([m.name for m in storage])} in {settings.zones} zone(s), "
                      f"{settings.replicas} replica(s); device weights are sizes in TB")
        placed = {m.name for m in storage}
        front = best_controller([m for m in machines if m.name not in placed]) or (storage[0] if storage else None)
        if front is not None:
            for element in ("swift-proxy", "swift-ring-compute", "swift-dispersion"):
                proposal.assign(element, front.name)
            proposal.note(f"proxy, ring computation and dispersion reports on {front.name}")
        settings.cluster_hash = secrets.token_hex(16)
        if ctx.proposals("keystone"):
            settings.keystone_instance = ctx.find_proposal("keystone").name
        else:
            settings.auth_method = "swauth"
            settings.cluster_admin_pw = secrets.token_urlsafe(16)
            proposal.note("auth: swauth, since there is no keystone proposal")
        proposal.settings = settings

    def claims(self, proposal):
        storage = set(proposal.elements.get("swift-storage", []))
        return {node: [d.name for d in devices] for node, devices in proposal.settings.devices.items() if node in storage}

    def validate(self, proposal, ctx):
        settings = proposal.settings
        storage = proposal.elements.get("swift-storage", [])
        placed = set(storage)
        for node in settings.devices:
            if node not in placed:
                yield f"devices lists {node}, which is not in swift-storage"
        zones_used = {d.zone for devices in settings.devices.values() for d in devices}
        if any(zone > settings.zones for zone in zones_used):
            yield f"a device is in zone {max(zones_used)}, but there are only {settings.zones} zones"
        if ctx.draft:
            return
        if not len(storage) >= settings.zones >= settings.replicas:
            yield (f"swift needs storage machines >= zones >= replicas; has {len(storage)} >= {settings.zones} "
                   f">= {settings.replicas}")
        for node in storage:
            if not settings.devices.get(node):
                yield f"{node} is a storage machine but devices lists no disk for it"
        empty = sorted(set(range(1, settings.zones + 1)) - zones_used)
        if storage and empty:
            yield f"zone(s) {', '.join(map(str, empty))} have no device"
        if settings.auth_method == "keystone" and settings.keystone_instance == "none":
            yield "auth_method keystone needs keystone_instance (or use auth_method swauth)"
