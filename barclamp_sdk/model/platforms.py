"""Platforms and virtual machines: what a node's facts say it runs on.

* :func:`os_of` the operating system family (Ohai's ``os``: ``linux``,
  ``windows``, ``darwin``, ``aix``, ``freebsd`` ...), inferred from the
  platform when Ohai did not say;
* :func:`platform_refusal` Crowbar's element constraints ``platform`` /
  ``exclude_platform`` (``{"windows": "/.*/"}``, ``{"suse": ">= 12.2"}``);
* :func:`classify_virtualization` a virtual machine recognised from Ohai's
  ``virtualization``, DMI (VirtualBox, VMware, QEMU/KVM, Xen HVM domU,
  Hyper-V, clouds) and Ohai's ``cloud`` hints.

Pure functions on plain facts: this module imports nothing of the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

#: Ohai ``platform`` values and their operating system (Ohai ``os``).
_PLATFORM_OS: dict[str, str] = {
    **{p: "linux" for p in (
        "ubuntu", "debian", "linuxmint", "raspbian", "redhat", "centos", "rocky", "almalinux",
        "fedora", "oracle", "amazon", "scientific", "suse", "opensuse", "opensuseleap", "sles",
        "sles_sap", "arch", "gentoo", "alpine", "clearos", "xenserver", "xcp", "cumulus", "nexus_centos",
        "ios_xr", "slackware", "coreos", "flatcar", "photon", "clearlinux", "mangeia", "virtuozzo")},
    "windows": "windows", "mac_os_x": "darwin", "aix": "aix",
    "freebsd": "freebsd", "openbsd": "openbsd", "netbsd": "netbsd", "dragonflybsd": "dragonflybsd",
    "solaris2": "solaris2", "smartos": "solaris2", "omnios": "solaris2", "openindiana": "solaris2",
    "opensolaris": "solaris2", "nexentacore": "solaris2", "illumos": "solaris2",
    "vmware": "vmkernel", "esxi": "vmkernel",
}

#: The constraint every shipped barclamp element declares: Linux only.
LINUX: Mapping[str, str] = {"linux": "/.*/"}


def os_of(platform: str, os: str = "") -> str:
    """The operating system family: Ohai's ``os``, else inferred from ``platform``."""
    return (os or _PLATFORM_OS.get(platform.lower(), "")).lower()


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def version_matches(spec: str, version: str) -> bool:
    """Crowbar's version spec: ``/regex/``, a comparison (``>= 12.2``), or a prefix ("12" matches "12.04")."""
    spec = str(spec).strip()
    if len(spec) >= 2 and spec.startswith("/") and spec.endswith("/"):
        return re.search(spec[1:-1], version) is not None
    match = re.match(r"^(<=|>=|==|!=|<|>|=)\s*(.+)$", spec)
    if match:
        op, wanted = match.group(1), _version_tuple(match.group(2))
        have = _version_tuple(version)
        if not have:
            return False
        return {"<": have < wanted, "<=": have <= wanted, ">": have > wanted, ">=": have >= wanted,
                "=": have == wanted, "==": have == wanted, "!=": have != wanted}[op]
    return version == spec or version.startswith(spec + ".")


def _matches(constraint: Mapping[str, str], platform: str, family: str, os: str, version: str) -> bool:
    names = {platform.lower(), family.lower(), os.lower()} - {""}
    return any(key.lower() in names and version_matches(spec, version) for key, spec in constraint.items())


def platform_refusal(platform: str, platform_version: str, platform_family: str, os: str,
                     *, allowed: Mapping[str, str] | None, excluded: Mapping[str, str]) -> str | None:
    """Why a machine's platform breaks an element's constraints, or None.

    Keys name a platform (``ubuntu``), a family (``rhel``) or an OS
    (``linux``, ``windows``); values are version specs. A machine whose
    platform is not reported at all is not refused (nothing says it is wrong).
    """
    system = os_of(platform, os)
    if not (platform or system):
        return None
    shown = f"{platform or system} {platform_version}".strip()
    if allowed is not None and not _matches(allowed, platform, platform_family, system, platform_version):
        wanted = ", ".join(f"{k} {v}" if v != "/.*/" else k for k, v in allowed.items())
        return f"its platform {shown} is not supported (supported: {wanted})"
    if excluded and _matches(excluded, platform, platform_family, system, platform_version):
        return f"its platform {shown} is excluded"
    return None


class Virtualization(NamedTuple):
    """What a machine is: ``role`` "guest", "host" or ""; ``source`` how it was recognised."""

    system: str
    role: str
    source: str


#: (manufacturer pattern, product pattern, system): DMI of virtual machines.
_DMI_GUESTS: tuple[tuple[str, str, str], ...] = (
    (r"innotek|oracle corporation", r"virtualbox", "vbox"),
    (r"", r"^virtualbox", "vbox"),
    (r"^vmware", r"", "vmware"),
    (r"", r"^vmware", "vmware"),
    (r"^qemu", r"", "kvm"),
    (r"", r"^kvm|^rhev|^ovirt|^standard pc \(|^bochs", "kvm"),
    (r"^red hat", r"^kvm|^rhel|^openstack", "kvm"),
    (r"^xen", r"", "xen"),
    (r"", r"hvm domu", "xen"),
    (r"^microsoft corporation", r"^virtual machine", "hyperv"),
    (r"^amazon ec2", r"", "amazonec2"),
    (r"^google", r"^google compute engine", "gce"),
    (r"^openstack", r"", "openstack"),
    (r"", r"^openstack", "openstack"),
    (r"^digitalocean", r"", "digitalocean"),
    (r"", r"^droplet$", "digitalocean"),
    (r"^alibaba cloud", r"", "alibaba"),
    (r"^oraclecloud", r"", "oci"),
    (r"^hetzner", r"^vserver", "hetzner"),
    (r"^scaleway", r"", "scaleway"),
    (r"^nutanix", r"^ahv", "nutanix"),
    (r"^parallels", r"", "parallels"),
    (r"^bhyve", r"", "bhyve"),
)

#: Ohai ``cloud.provider`` values that are virtual machines unless DMI says bare metal.
_CLOUD_GUESTS = frozenset({"ec2", "gce", "azure", "openstack", "digital_ocean", "linode", "rackspace",
                           "softlayer", "eucalyptus", "scaleway", "oci", "alibaba"})


def dmi_guest(manufacturer: str, product: str) -> str:
    """The hypervisor or cloud DMI names (``vmware``, ``kvm``, ``gce`` ...), or ""."""
    vendor, model = manufacturer.strip().lower(), product.strip().lower()
    if model.endswith(".metal"):  # a cloud's bare-metal instance
        return ""
    for vendor_re, product_re, system in _DMI_GUESTS:
        if (not vendor_re or re.search(vendor_re, vendor)) and (not product_re or re.search(product_re, model)):
            if vendor or model:
                return system
    return ""


def classify_virtualization(virtualization: Mapping[str, Any], dmi_system: Mapping[str, Any],
                            cloud: Mapping[str, Any] | None = None) -> Virtualization:
    """A machine's virtualisation from Ohai's ``virtualization``, DMI and cloud hints.

    DMI naming a virtual machine makes the machine a guest even when Ohai
    saw a hypervisor's device (``/dev/kvm`` in a nested guest); Ohai's answer
    stands otherwise; a cloud provider hint marks a guest last.
    """
    system = str(virtualization.get("system") or "")
    role = str(virtualization.get("role") or "")
    guest = dmi_guest(str(dmi_system.get("manufacturer") or ""), str(dmi_system.get("product_name") or ""))
    if guest and role != "guest":
        return Virtualization(guest, "guest", "dmi")
    if role:
        return Virtualization(system, role, "ohai")
    systems = virtualization.get("systems")
    if isinstance(systems, Mapping):
        guests = sorted(str(s) for s, r in systems.items() if r == "guest")
        if guests:
            return Virtualization(guests[0], "guest", "ohai")
    provider = str((cloud or {}).get("provider") or "")
    if provider in _CLOUD_GUESTS and not str(dmi_system.get("product_name") or "").strip().endswith(".metal"):
        return Virtualization(provider, "guest", "cloud")
    return Virtualization(system, role, "ohai" if system else "")
