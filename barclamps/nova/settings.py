"""nova's settings: Crowbar's keys and defaults, typed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

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


class VolumeEqlx(Attributes):
    """The linked eqlx proposal's settings, at Crowbar fred's path (copied on save and commit).

    Crowbar 1.x (fred) kept the EqualLogic settings in nova; here they live in
    the eqlx proposal (``volume.eqlx_instance``) and are copied into this block
    whenever nova is saved and before each commit, for cookbooks that read ``node[:nova][:volume][:eqlx]``.
    Edit them in the eqlx proposal: edits here are overwritten. Passwords are
    references to the eqlx proposal's secrets item.
    """

    san_ip: str = "192.168.124.11"
    san_login: str = "grpadmin"
    san_password: Secret = None
    san_thin_provision: bool = False
    eqlx_group_name: str = "group-0"
    eqlx_use_chap: bool = False
    eqlx_chap_login: str = "chapadmin"
    eqlx_chap_password: Secret = None
    eqlx_ssh_keepalive_interval: int = 1200
    eqlx_cli_timeout: int = 30
    eqlx_pool: str = "default"


class Volume(Attributes):
    volume_name: str = "nova-volumes"
    volume_type: Literal["raw", "local", "eqlx", "rbd"] = "raw"
    nova_raw_method: Literal["all", "first"] = "all"
    nova_volume_disks: dict[str, list[str]] = {}
    local_file: str = "/var/lib/nova/volume.raw"
    local_size: int = Field(2000, ge=2, description="GB")
    eqlx_instance: str = ""
    eqlx: VolumeEqlx = VolumeEqlx()
    rbd: Rbd = Rbd()


class XenServer(Attributes):
    username: str = "root"
    password: Secret = None
    hosts: dict[str, str] = {}


class VCenter(Attributes):
    host: str = ""
    user: str = ""
    password: Secret = None
    #: The vCenter clusters the compute proxy manages (Crowbar's ``clusters``).
    clusters: list[str] = []
    #: A regular expression of the datastores to use; empty: every datastore.
    datastore: str = ""
    interface: str = "vmnic0"

    @field_validator("clusters", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """``--set vcenter.clusters=a,b`` as well as a list."""
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class Database(Attributes):
    mysql_instance: str = "none"
    password: Secret = None
    user: str = "nova"
    database: str = "nova"


class Rabbit(Attributes):
    password: Secret = None
    user: str = "nova"
    vhost: str = "/nova"


class Scheduler(Attributes):
    ram_allocation_ratio: float = Field(1.0, gt=0)
    cpu_allocation_ratio: float = Field(16.0, gt=0)


class Kvm(Attributes):
    ksm_enabled: bool = False


class Ssl(Attributes):
    """TLS of the nova API (Crowbar's ``ssl``)."""

    enabled: bool = False
    certfile: str = "/etc/nova/ssl/certs/signing_cert.pem"
    keyfile: str = "/etc/nova/ssl/private/signing_key.pem"
    generate_certs: bool = False
    insecure: bool = False
    cert_required: bool = False
    ca_certs: str = "/etc/nova/ssl/certs/ca.pem"


class NoVncSsl(Attributes):
    enabled: bool = False
    certfile: str = ""
    keyfile: str = ""


class NoVnc(Attributes):
    ssl: NoVncSsl = NoVncSsl()


class NovaAttributes(Attributes):
    hypervisor: Literal["kvm", "xenserver", "vcenter"] = "kvm"
    libvirt_type: Literal["kvm", "qemu"] = "kvm"
    use_novnc: bool = True
    verbose: bool = True
    debug: bool = False
    use_syslog: bool = False
    #: The system user nova's services run as, and its keystone service user.
    user: str = "nova"
    service_user: str = "nova"
    keystone_instance: str = "none"
    glance_instance: str = "none"
    rabbitmq_instance: str = "none"
    cinder_instance: str = "none"
    quantum_instance: str = "none"
    neutron_instance: str = "none"
    itxt_instance: str = "none"
    trusted_flavors: bool = False
    use_shared_instance_storage: bool = False
    use_migration: bool = False
    enable_v3_api: bool = False
    neutron_url_timeout: int = Field(30, ge=1)
    db: Database = Database()
    rabbit: Rabbit = Rabbit()
    scheduler: Scheduler = Scheduler()
    kvm: Kvm = Kvm()
    ssl: Ssl = Ssl()
    novnc: NoVnc = NoVnc()
    network: Network = Network()
    volume: Volume = Volume()
    xenserver: XenServer = XenServer()
    vcenter: VCenter = VCenter()
