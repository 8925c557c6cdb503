"""An NTP barclamp: a few time servers for the cluster, every other machine a client.

A complete barclamp in well under 100 lines: metadata, a settings model whose
defaults are the template, two elements with placement rules, and the one
hook that reads the inventory. Install it with an entry point::

    [project.entry-points."barclamp_sdk.barclamps"]
    ntp = "ntp_barclamp:Ntp"

or try it without packaging: ``CROWBAR_BARCLAMPS=ntp_barclamp:Ntp crowbar ntp proposal create default``.
"""

from __future__ import annotations

from pydantic import Field

from barclamp_sdk import Attributes, Barclamp, Element
from barclamp_sdk import general_purpose, short


class NtpAttributes(Attributes):
    external_servers: list[str] = ["0.pool.ntp.org", "1.pool.ntp.org"]
    server_count: int = Field(1, ge=1, le=5)
    allow_clients_from: str = "10.0.0.0/8"


class Ntp(Barclamp):
    name = "ntp"
    display_name = "NTP"
    description = "Time for every machine: a few NTP servers, the others their clients"
    order = 20
    Attributes = NtpAttributes
    elements = (
        Element("ntp-server", recipes=("ntp::server",), priority=20, min=1, max=5),
        Element("ntp-client", recipes=("ntp::client",), priority=21, conflicts=("ntp-server",)),
    )
    element_order = (("ntp-server",), ("ntp-client",))

    def create_proposal(self, proposal, inventory, ctx):
        machines = general_purpose(inventory.candidates())
        count = proposal.settings.server_count
        # Servers on real hardware first (a VM's clock drifts), then by name.
        servers = sorted(machines, key=lambda m: (m.is_virtual, m.name))[:count]
        clients = [m for m in machines if m not in servers]
        proposal.assign("ntp-server", *[m.name for m in servers])
        proposal.assign("ntp-client", *[m.name for m in clients])
        proposal.note(f"{len(servers)} server(s) on {short([m.name for m in servers])}: physical machines first")

    def validate(self, proposal, ctx):
        if not proposal.settings.external_servers:
            yield "external_servers is empty: the servers need an upstream source of time"
        servers = len(proposal.elements.get("ntp-server", []))
        if servers != proposal.settings.server_count and not ctx.draft:
            yield f"server_count is {proposal.settings.server_count} but ntp-server has {servers} machine(s)"
