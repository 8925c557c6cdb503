"""eqlx: Dell EqualLogic PS Series SAN as the block store behind nova-volume.

The SAN itself is not configured: this barclamp configures the volume
driver that speaks to it (over SSH to the group's management address), on
the machines that run nova-volume. A nova proposal with
``volume.volume_type = eqlx`` links to this one.

Settings keep the names of Crowbar's ``nova.volume.eqlx`` and Cinder's
driver options (``san_ip``, ``eqlx_group_name``, ``san_ssh_port`` ...);
the passwords live in the secrets store.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import Field, field_validator

from barclamp_sdk import LINUX, Attributes, Barclamp, Element, Secret, best_controller

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class EqlxAttributes(Attributes):
    san_ip: str = Field("192.168.124.11", description="group management address or host name")
    san_login: str = Field("grpadmin", min_length=1)
    san_password: Secret = None
    san_thin_provision: bool = False
    eqlx_group_name: str = Field("group-0", min_length=1)
    eqlx_pool: str = Field("default", min_length=1)
    eqlx_use_chap: bool = False
    eqlx_chap_login: str = "chapadmin"
    eqlx_chap_password: Secret = None
    eqlx_cli_timeout: int = Field(30, ge=1, le=3600)
    eqlx_ssh_keepalive_interval: int = Field(1200, ge=1, le=86400, description="seconds")
    eqlx_cli_max_retries: int = Field(5, ge=0, le=100)
    san_ssh_port: int = Field(22, ge=1, le=65535)
    ssh_conn_timeout: int = Field(30, ge=1, le=3600)

    @field_validator("san_ip")
    @classmethod
    def _address_or_host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOSTNAME.fullmatch(value):
                raise ValueError("must be an IP address or a host name") from None
        return value


class Eqlx(Barclamp):
    name = "eqlx"
    display_name = "EqualLogic"
    description = "Dell EqualLogic SAN as the block store of nova-volume"
    order = 90
    member = ("openstack",)
    Attributes = EqlxAttributes
    elements = (
        Element("eqlx-driver", recipes=("eqlx::driver",), platform=LINUX, priority=90, min=1,
                description="EqualLogic volume driver for nova-volume (SSH to the SAN group)"),
    )

    def create_proposal(self, proposal, inventory, ctx):
        volume_nodes = self._nova_volume_nodes(ctx)
        if volume_nodes:
            proposal.assign("eqlx-driver", *volume_nodes)
            proposal.note(f"driver on {', '.join(volume_nodes)}: they run nova-volume in an existing nova proposal")
            return
        machine = best_controller(inventory.candidates())
        if machine is None:
            proposal.note("no machines yet: assign eqlx-driver to the nova-volume machines later")
            return
        proposal.assign("eqlx-driver", machine.name)
        proposal.note(f"driver on {machine.name}: nova puts its volume service on the controller, "
                      "the machine with the most memory among those not built for storage")

    def _nova_volume_nodes(self, ctx) -> list[str]:
        nodes: set[str] = set()
        for nova in ctx.proposals("nova"):
            nodes.update(nova.elements.get("nova-multi-volume", []))
        return sorted(nodes)

    def validate(self, proposal, ctx):
        settings = proposal.settings
        if not ctx.draft and settings.san_password is None:
            yield ("san_password is not set; set it with "
                   f"`crowbar eqlx proposal edit {proposal.name} --set san_password=...`")
        if settings.eqlx_use_chap and not settings.eqlx_chap_login:
            yield "eqlx_chap_login must not be empty when eqlx_use_chap is true"
        if not ctx.draft and settings.eqlx_use_chap and settings.eqlx_chap_password is None:
            yield "eqlx_chap_password is not set, and eqlx_use_chap is true"
