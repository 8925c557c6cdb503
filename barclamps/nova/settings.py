"""nova's settings: Crowbar's keys and defaults, typed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from barclamp_sdk import Attributes, Secret


class Network(Attributes):
    #: flat, flatdhcp or vlan; auto derives it as Crowbar did (see manager).
    mode: Literal["auto", "flat", "flatdhcp", "vlan"] = "auto"
    #: The network manager in effect (written on every save).
    manager: Literal["", "flat", "flatdhcp", "vlan"] = ""
    ha_enabled: bool = True
    dhcp_enabled: bool = True
    tenant_vlans: bool = False
    allow_same_net_traffic: bool = False
    num_networks: int = Field(1, ge=1, le=4096)
    network_size: int = Field(256, ge=4, le=65536)
    vlan_start: int = Field(100, ge=1, le=4094)

    def derived_manager(self) -> str:
        """Crowbar's rule when ``mode`` is auto: VLANs with DHCP and tenant VLANs."""
        if self.mode != "auto":
            return self.mode
        return "vlan" if self.dhcp_enabled and self.tenant_vlans else "flatdhcp" if self.dhcp_enabled else "flat"


class Rbd(Attributes):
    ceph_instance: str = ""
    pool: str = "volumes"
    user: str = "nova"
    secret_uuid: str = ""


class Volume(Attributes):
    volume_name: str = "nova-volumes"
    volume_type: Literal["raw", "local", "eqlx", "rbd"] = "raw"
    nova_raw_method: Literal["all", "first"] = "all"
    nova_volume_disks: dict[str, list[str]] = {}
    local_file: str = "/var/lib/nova/volume.raw"
    local_size: int = Field(2000, ge=2, description="GB")
    eqlx_instance: str = ""
    rbd: Rbd = Rbd()


class XenServer(Attributes):
    username: str = "root"
    password: Secret = None
    hosts: dict[str, str] = {}


class VCenter(Attributes):
    host: str = ""
    user: str = ""
    password: Secret = None
    cluster_name: str = ""
    datastore_regex: str = ".*"
    interface: str = "vmnic0"


class Database(Attributes):
    mysql_instance: str = "none"


class NovaAttributes(Attributes):
    hypervisor: Literal["kvm", "xenserver", "vcenter"] = "kvm"
    libvirt_type: Literal["kvm", "qemu"] = "kvm"
    use_novnc: bool = True
    verbose: bool = True
    keystone_instance: str = "none"
    glance_instance: str = "none"
    db: Database = Database()
    network: Network = Network()
    volume: Volume = Volume()
    xenserver: XenServer = XenServer()
    vcenter: VCenter = VCenter()
