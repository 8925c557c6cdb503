"""Which BMC gets the fleet's credentials: a server-mastered, confirmed, pinned address.

A node reports its BMC under ``crowbar_wall.bmc`` in its own node object,
which the node (chef-client, or anyone holding its client key) writes. That
report is a fact *about* the node, never an instruction: the library never
sends credentials to it. The address it does connect to with credentials is
kept in the machine's server-mastered role, under
``default_attributes.crowbar.bmc``::

    {"address": "10.9.0.12", "ipmi_port": 623, "redfish_port": 443,
     "redfish_system": null, "interface": "bmc",
     "certificate_sha256": "5f1c...",          # the Redfish certificate, pinned
     "source": "operator", "confirmed_by": "admin", "confirmed_at": "2026-..."}

It is written only by :meth:`MachineBMCs.confirm`: an operator who checked
the address (``crowbar machines bmc confirm NODE [--address A]``), or a
trusted source running with the server's credentials (the network
barclamp's BMC allocation, say: ``confirm(name, address, source="network")``).
Confirming reads the Redfish certificate without logging in and pins it;
every later connection must present the same one. A node report that
differs from the confirmed endpoint is shown as a warning, never used.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError as PydanticValidationError

from barclamp_sdk.bmc import DEFAULT_REDFISH_PORT, redfish_certificate_sha256
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import BMCError, CrowbarError, NotFoundError, ValidationError
from barclamp_sdk.model.inventory import BMCInfo
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.noderoles import NodeRoleStore, crowbar_data
from barclamp_sdk.model.reader import ClusterReader

#: The key of ``default_attributes.crowbar`` holding the confirmed BMC.
BMC_KEY = "bmc"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ConfirmedBMC(BaseModel):
    """A BMC endpoint the library may log in to, and who vouched for it."""

    model_config = ConfigDict(frozen=True)

    address: str
    ipmi_port: int = 623
    redfish_port: int = DEFAULT_REDFISH_PORT
    redfish_system: str | None = None
    interface: str | None = None
    certificate_sha256: str | None = None
    source: str = "operator"
    confirmed_by: str = ""
    confirmed_at: str = ""

    def where(self) -> str:
        return endpoint_text(self.address, self.ipmi_port, self.redfish_port)


def endpoint_text(address: str, ipmi_port: int | None, redfish_port: int | None) -> str:
    """``10.9.0.12 (IPMI 623, Redfish 443)``."""
    return f"{address} (IPMI {ipmi_port or 623}, Redfish {redfish_port or DEFAULT_REDFISH_PORT})"


def confirmed_from_role(role: dict[str, Any] | None) -> ConfirmedBMC | None:
    """The confirmed BMC recorded in a ``crowbar-<node>`` role (None: none, or unreadable)."""
    data = ((role or {}).get("default_attributes") or {}).get("crowbar") or {}
    recorded = data.get(BMC_KEY) if isinstance(data, dict) else None
    if not isinstance(recorded, dict):
        return None
    try:
        return ConfirmedBMC.model_validate(recorded)
    except PydanticValidationError:
        return None


def report_warnings(name: str, confirmed: ConfirmedBMC | None, reported: BMCInfo | None) -> list[str]:
    """What to tell an operator about a node's own BMC report, next to the confirmed one."""
    if reported is None:
        return []
    told = endpoint_text(reported.address, reported.ipmi_port, reported.redfish_port)
    if confirmed is None:
        return [f"{name} reports its BMC at {told}, not confirmed: never used with credentials; "
                f"check it, then `crowbar machines bmc confirm {name}`"]
    same = ((reported.address, reported.ipmi_port, reported.redfish_port or DEFAULT_REDFISH_PORT)
            == (confirmed.address, confirmed.ipmi_port, confirmed.redfish_port)
            and reported.redfish_system in (None, confirmed.redfish_system))
    if same:
        return []
    return [f"{name} reports its BMC at {told}, not at the confirmed {confirmed.where()}: the report is ignored; "
            f"if the BMC really moved, check it and `crowbar machines bmc confirm {name} --address ...`"]


def check_address(address: str) -> str:
    """An IP address or a host name, or a one-line ValidationError."""
    text = address.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise ValidationError(f"BMC address {address!r} is neither an IP address nor a host name")
    return text.lower()


def _check_port(what: str, port: int) -> int:
    if not 0 < int(port) < 65536:
        raise ValidationError(f"{what} {port} is not a port number (1-65535)")
    return int(port)


class MachineBMCs:
    """Confirmed BMC endpoints of machines (``crowbar.machines.bmc``)."""

    def __init__(self, chef: ChefClient, roles: NodeRoleStore, reader: ClusterReader) -> None:
        self.chef = chef
        self.roles = roles
        self.reader = reader

    def get(self, name: str) -> ConfirmedBMC | None:
        """The confirmed BMC of machine ``name``, read from its role (None: not confirmed)."""
        role = self.roles.find(name)
        if role is None:
            raise NotFoundError(f"no machine {name!r}; see `crowbar machines list`")
        return confirmed_from_role(role)

    def reported(self, name: str) -> BMCInfo | None:
        """What the node itself reports under ``crowbar_wall.bmc`` (shown, never used)."""
        machine = self.reader.inventory([name]).get(name)
        return machine.bmc if machine is not None else None

    def show(self, name: str) -> dict[str, Any]:
        """The confirmed BMC, the node's own report, and warnings where they differ."""
        confirmed = self.get(name)
        reported = self.reported(name)
        return {
            "machine": name,
            "confirmed": confirmed.model_dump() if confirmed else None,
            "reported": reported.model_dump() if reported else None,
            "warnings": report_warnings(name, confirmed, reported),
        }

    def confirm(
        self,
        name: str,
        address: str | None = None,
        *,
        ipmi_port: int | None = None,
        redfish_port: int | None = None,
        redfish_system: str | None = None,
        interface: str | None = None,
        certificate_sha256: str | None = None,
        source: str = "operator",
        by: str | None = None,
        timeout: float = 10.0,
    ) -> ConfirmedBMC:
        """Record the BMC endpoint of ``name`` that credentials may go to, pinning its certificate.

        With no ``address`` the node's own report is taken (ports and system
        too): the caller vouches that it checked it. With an ``address`` the
        ports default to 623 (IPMI) and 443 (Redfish). The Redfish
        certificate is read without logging in and pinned; a
        ``certificate_sha256`` known out of band must match it (and is
        pinned as given if the BMC does not answer now). A trusted
        source (not an operator) names itself in ``source``.
        """
        if self.roles.find(name) is None:
            raise NotFoundError(f"no machine {name!r}; see `crowbar machines list`")
        if address is None:
            reported = self.reported(name)
            if reported is None:
                raise ValidationError(f"{name} reports no BMC; give its address "
                                      f"(`crowbar machines bmc confirm {name} --address A`)")
            address = reported.address
            ipmi_port = ipmi_port or reported.ipmi_port
            redfish_port = redfish_port or reported.redfish_port
            redfish_system = redfish_system or reported.redfish_system
        address = check_address(address)
        ipmi = _check_port("IPMI port", ipmi_port or 623)
        redfish = _check_port("Redfish port", redfish_port or DEFAULT_REDFISH_PORT)
        given = certificate_sha256.replace(":", "").lower() if certificate_sha256 else None
        if given is not None and not _SHA256.match(given):
            raise ValidationError(f"certificate fingerprint {certificate_sha256!r} is not a SHA-256 (64 hex digits)")
        try:
            seen: str | None = redfish_certificate_sha256(address, redfish, timeout=timeout)
        except BMCError as exc:
            if given is None:
                raise BMCError(f"{exc}; confirming pins its certificate: check the address and port, "
                               "or give the certificate's SHA-256 known out of band") from None
            seen = None  # down now: the fingerprint given is pinned, and checked on every connection
        if given is not None and seen is not None and seen != given:
            raise ValidationError(f"the BMC at {address}:{redfish} presents certificate sha256 {seen}, "
                                  f"not the {given} given; nothing was recorded")
        confirmed = ConfirmedBMC(
            address=address, ipmi_port=ipmi, redfish_port=redfish, redfish_system=redfish_system or None,
            interface=interface or None, certificate_sha256=given or seen, source=source,
            confirmed_by=by or str(getattr(self.chef.config, "client_name", "") or ""),
            confirmed_at=now_iso())

        def change(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            data[BMC_KEY] = confirmed.model_dump()
            (data.get("hardware") or {}).pop("bmc_certificate", None)  # trust-on-first-use leftover
            return True

        self._write(name, change, f"confirm the BMC of {name}")
        return confirmed

    def forget(self, name: str) -> bool:
        """Drop the confirmed BMC of ``name`` (nothing is sent to its BMC until confirmed again)."""
        def change(role: dict[str, Any]) -> bool:
            return crowbar_data(role).pop(BMC_KEY, None) is not None

        return bool(self._write(name, change, f"forget the BMC of {name}").written)

    def _write(self, name: str, change: Any, purpose: str) -> Any:
        report = self.roles.update({name: change}, purpose=purpose)
        if report.missing:
            raise NotFoundError(f"no machine {name!r}; see `crowbar machines list`")
        if report.failed:
            raise report.failed[name]
        if not (report.written or report.unchanged):
            raise CrowbarError(f"could not record the BMC of {name}")
        return report
