"""nova: OpenStack compute, on three hypervisor architectures.

``hypervisor`` chooses the architecture, which shapes the deployment:

``kvm`` (OS plus hypervisor)
    a compute agent on every host: ``nova-multi-compute-kvm`` where the CPU
    virtualises (vmx/svm) and the machine is not itself virtual, else QEMU.
``xenserver`` (bare-metal hypervisor)
    each XenServer host is managed as one unit through XAPI: one agent per
    host (``nova-multi-compute-xen``), its address in ``xenserver.hosts``.
``vcenter`` (clustered hypervisor)
    one compute proxy (``nova-multi-compute-vmware``) talks to the vCenter
    cluster; ESX hosts never get a role (that would be a second master).

``volume.volume_type`` eqlx or rbd links the committed (or only) eqlx or
ceph proposal and makes it a commit dependency; with eqlx, the linked
proposal's settings are copied to ``volume.eqlx`` (Crowbar fred's path) on
every save and before each commit.

Settings keep the keys of Crowbar's nova templates (fred, mesa-1.6, pebbles);
docs/reference.md lists each Crowbar key that is elsewhere, and why.
"""

from __future__ import annotations

import uuid

from barclamp_sdk import LINUX, Barclamp, Element, Link, best_controller, general_purpose, is_managed_hypervisor, runs_services, short
from barclamps.nova.settings import NovaAttributes, VolumeEqlx

COMPUTE = {"kvm": ("nova-multi-compute-kvm", "nova-multi-compute-qemu"),
           "xenserver": ("nova-multi-compute-xen",), "vcenter": ("nova-multi-compute-vmware",)}
ALL_COMPUTE = tuple(e for elements in COMPUTE.values() for e in elements)


def can_run_kvm(machine):
    if machine.is_virtual or not machine.can_virtualize:
        return "a virtual machine, or a CPU without vmx/svm: use nova-multi-compute-qemu"
    return runs_services(machine)


def is_xenserver_host(machine):
    return None if is_managed_hypervisor(machine) and machine.virtualization_system == "xen" else "not a XenServer host"


class Nova(Barclamp):
    name = "nova"
    display_name = "Nova"
    description = "OpenStack compute (KVM, XenServer or vCenter)"
    order = 95
    member = ("openstack",)
    Attributes = NovaAttributes
    #: The controller serves the API on public and runs the fixed network's DHCP; computes carry nova_fixed.
    networks = {"nova-multi-controller": ("public", "nova_fixed"),
                **{e: ("nova_fixed",) for e in ("nova-multi-compute-kvm", "nova-multi-compute-qemu",
                                                "nova-multi-compute-xen", "nova-multi-compute-vmware")}}
    elements = (
        Element("nova-multi-controller", recipes=("nova::controller",), platform=LINUX, priority=95, count=1, accepts=runs_services),
        Element("nova-multi-compute-kvm", recipes=("nova::compute_kvm",), platform=LINUX, priority=97,
                conflicts=("nova-multi-compute-qemu",), accepts=can_run_kvm),
        Element("nova-multi-compute-qemu", recipes=("nova::compute_qemu",), platform=LINUX, priority=97, accepts=runs_services),
        Element("nova-multi-compute-xen", recipes=("nova::compute_xen",), platform=LINUX, priority=97, accepts=is_xenserver_host),
        Element("nova-multi-compute-vmware", recipes=("nova::compute_vmware",), platform=LINUX, priority=97, max=1,
                accepts=runs_services),
        Element("nova-multi-volume", recipes=("nova::volume",), platform=LINUX, priority=96, accepts=runs_services),
    )
    element_order = (("nova-multi-controller",), (*ALL_COMPUTE, "nova-multi-volume"))
    links = (
        Link("keystone", "keystone_instance", optional=True),
        Link("glance", "glance_instance", optional=True),
        Link("database", "db.mysql_instance", optional=True),
        Link("rabbitmq", "rabbitmq_instance", optional=True),
        Link("cinder", "cinder_instance", optional=True),
        Link("quantum", "quantum_instance", optional=True),
        Link("neutron", "neutron_instance", optional=True),
        Link("itxt", "itxt_instance", optional=True),
        Link("eqlx", "volume.eqlx_instance", when=lambda s: s.volume.volume_type == "eqlx"),
        Link("ceph", "volume.rbd.ceph_instance", when=lambda s: s.volume.volume_type == "rbd"),
    )

    def create_proposal(self, proposal, inventory, ctx):
        machines = inventory.candidates()
        services = general_purpose(machines)
        controller = best_controller(services)
        if controller is None:
            proposal.note("no machine can run the controller yet")
            return
        settings = proposal.settings
        proposal.assign("nova-multi-controller", controller.name)
        proposal.note(f"controller on {controller.name}: most memory ({controller.memory_gb:.0f} GiB) "
                      "among machines not built for storage")
        others = [m for m in services if m is not controller]
        if settings.hypervisor == "kvm":
            hosts = [m for m in others if not m.storage_heavy] if others else [controller]
            kvm = [m.name for m in hosts if m.can_virtualize and not m.is_virtual]
            on_kvm = set(kvm)
            qemu = [m.name for m in hosts if m.name not in on_kvm]
            proposal.assign("nova-multi-compute-kvm", *kvm)
            proposal.assign("nova-multi-compute-qemu", *qemu)
            proposal.note(f"KVM compute on {short(kvm)}: their CPUs virtualise (vmx/svm)")
            if qemu:
                proposal.note(f"QEMU compute on {short(qemu)}: virtual machines, or CPUs without vmx/svm")
            settings.libvirt_type = "kvm" if kvm else "qemu"
        elif settings.hypervisor == "xenserver":
            xen = [m for m in machines if is_managed_hypervisor(m) and m.virtualization_system == "xen"]
            proposal.assign("nova-multi-compute-xen", *[m.name for m in xen])
            settings.xenserver.hosts = {m.name: f"https://{m.ipaddress}" for m in xen}
            proposal.note(f"one XAPI compute agent per XenServer host ({short([m.name for m in xen])}); "
                          "each host is managed as one unit")
        else:
            proxy = others[0] if others else controller
            proposal.assign("nova-multi-compute-vmware", proxy.name)
            esx = [m.name for m in machines if m.virtualization_system == "vmware" and is_managed_hypervisor(m)]
            proposal.note(f"vCenter compute proxy on {proxy.name}; ESX hosts ({short(esx)}) get no role: "
                          "vCenter manages them, and a second master would fight it")
        proposal.assign("nova-multi-volume", controller.name)
        proposal.note(f"volume service on the controller ({settings.volume.volume_type} volumes)")
        proposal.settings = settings

    def prepare(self, proposal, ctx):
        settings = proposal.settings
        settings.network.manager = settings.network.derived_manager()
        volume = settings.volume
        nodes = proposal.elements.get("nova-multi-volume", [])
        volume.eqlx = self._eqlx_copy(volume, ctx)
        if volume.volume_type == "rbd":
            volume.rbd.secret_uuid = volume.rbd.secret_uuid or str(uuid.uuid4())
        if volume.volume_type == "raw":
            for node in nodes:
                machine = ctx.inventory().get(node)
                if machine is not None and not volume.nova_volume_disks.get(node):
                    disks = [d.name for d in ctx.free_disks(machine, proposal)]
                    volume.nova_volume_disks[node] = disks[:1] if volume.nova_raw_method == "first" else disks
        volume.nova_volume_disks = {n: d for n, d in volume.nova_volume_disks.items()
                                    if volume.volume_type == "raw" and n in nodes}
        proposal.settings = settings

    def refresh(self, proposal, ctx):
        settings = proposal.settings
        settings.volume.eqlx = self._eqlx_copy(settings.volume, ctx)
        proposal.settings = settings

    @staticmethod
    def _eqlx_copy(volume, ctx) -> VolumeEqlx:
        """The linked eqlx proposal's settings at Crowbar fred's path (defaults when not linked)."""
        if volume.volume_type != "eqlx" or not volume.eqlx_instance:
            return VolumeEqlx()
        source = ctx.find_proposal("eqlx", volume.eqlx_instance).settings
        return VolumeEqlx(**{key: getattr(source, key) for key in VolumeEqlx.model_fields})

    def claims(self, proposal):
        return proposal.settings.volume.nova_volume_disks

    def validate(self, proposal, ctx):
        settings = proposal.settings
        arch = settings.hypervisor
        for element in ALL_COMPUTE:
            if proposal.elements.get(element) and element not in COMPUTE[arch]:
                yield f"{element} does not belong to the {arch} architecture (use {', '.join(COMPUTE[arch])})"
        missing = [n for n in proposal.elements.get("nova-multi-compute-xen", []) if n not in settings.xenserver.hosts]
        if missing:
            yield f"xenserver.hosts has no XAPI address for {', '.join(missing)}"
        if arch == "vcenter" and not ctx.draft:
            absent = [k for k in ("host", "user", "clusters") if not getattr(settings.vcenter, k)]
            absent += ["password"] if settings.vcenter.password is None else []
            if absent:
                yield f"vcenter needs {', '.join(absent)}; set them with `--set vcenter.KEY=VALUE`"
            if len(proposal.elements.get("nova-multi-compute-vmware", [])) != 1:
                yield "the vcenter architecture needs exactly one nova-multi-compute-vmware proxy"
        if settings.volume.volume_type == "eqlx" and settings.volume.eqlx_instance:
            eqlx = ctx.find_proposal("eqlx", settings.volume.eqlx_instance)
            uncovered = set(proposal.elements.get("nova-multi-volume", [])) - set(eqlx.elements.get("eqlx-driver", []))
            if uncovered:
                yield (f"eqlx/{eqlx.name} has no eqlx-driver on {', '.join(sorted(uncovered))} (nova-volume machines); "
                       f"add them with `crowbar eqlx proposal edit {eqlx.name} --set elements.eqlx-driver=...`")
