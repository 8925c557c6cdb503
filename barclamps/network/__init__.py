"""network: every address of the cluster, server-mastered.

The proposal declares the networks in Crowbar's shape
(``attributes.network.networks.<network>``: subnet, netmask, broadcast,
vlan, use_vlan, router, ``ranges.<range>.{start, end}``, conduit) and the
conduits (logical interfaces mapped onto NICs by speed and order, teamed or
not). Its defaults are the template: Crowbar's usual layout (admin and bmc
sharing 192.168.124.0/24, storage, public with nova_floating inside it,
nova_fixed, os_sdn). Saving checks the layout (:mod:`barclamps.network.checks`).

Once ``network/default`` is committed, a discovered machine gets an address
on ``admin`` (and, unless it is a virtual machine, on ``bmc``) from the
``host`` ranges, and a deleted machine's addresses are freed. Other barclamps
declare the networks their elements need (``networks``), and their commits
allocate them. Each address is one data bag item: see
:mod:`barclamp_sdk.model.addresses`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from barclamp_sdk import Attributes, Barclamp, CrowbarError, Element, Machine
from barclamps.network.checks import BMC_CONDUIT, check_networks
from barclamps.network.conduits import Conduit, Nic, check_token, resolve

__all__ = ["Network", "NetworkAttributes", "DISCOVERY_USER", "conduits_of", "nics_of"]

#: The user recorded for addresses allocated at discovery (freed on delete).
DISCOVERY_USER = "network-discovery"


class Range(Attributes):
    start: str
    end: str


class NetworkDef(Attributes):
    """One network (Crowbar's keys, plus ``share_segment_with``)."""

    conduit: str = "intf0"
    vlan: int = Field(0, ge=0, le=4094)
    use_vlan: bool = False
    add_bridge: bool = False
    subnet: str = ""
    netmask: str = "255.255.255.0"
    broadcast: str = ""
    router: str | None = None
    router_pref: int | None = None
    ranges: dict[str, Range] = {}
    #: Networks on the same segment (their subnets may overlap this one's; their ranges may not).
    share_segment_with: list[str] = []


class ConduitDef(Attributes):
    if_list: list[str] = []
    team_mode: int | None = Field(None, ge=0, le=6)


class ConduitMapEntry(Attributes):
    pattern: str
    conduit_list: dict[str, ConduitDef]


class Teaming(Attributes):
    #: Linux bonding mode (0 balance-rr ... 4 802.3ad ... 6 balance-alb).
    mode: int = Field(5, ge=0, le=6)


def _net(subnet: str, conduit: str, vlan: int, use_vlan: bool, ranges: dict[str, tuple[str, str]], *,
         router: str | None = None, router_pref: int | None = None, netmask: str = "255.255.255.0",
         broadcast: str = "", shares: tuple[str, ...] = ()) -> NetworkDef:
    prefix = subnet.rsplit(".", 1)[0]
    return NetworkDef(conduit=conduit, vlan=vlan, use_vlan=use_vlan, subnet=subnet, netmask=netmask,
                      broadcast=broadcast or f"{prefix}.255", router=router, router_pref=router_pref,
                      ranges={k: Range(start=s, end=e) for k, (s, e) in ranges.items()},
                      share_segment_with=list(shares))


def default_networks() -> dict[str, NetworkDef]:
    """Crowbar's usual layout."""
    return {
        "admin": _net("192.168.124.0", "intf0", 100, False,
                      {"admin": ("192.168.124.10", "192.168.124.11"), "dhcp": ("192.168.124.21", "192.168.124.80"),
                       "host": ("192.168.124.81", "192.168.124.160"),
                       "switch": ("192.168.124.241", "192.168.124.250")},
                      router="192.168.124.1", router_pref=10),
        "bmc": _net("192.168.124.0", BMC_CONDUIT, 100, False, {"host": ("192.168.124.162", "192.168.124.240")},
                    shares=("admin",)),
        "bmc_vlan": _net("192.168.124.0", "intf2", 100, True, {"host": ("192.168.124.161", "192.168.124.161")},
                         shares=("admin", "bmc")),
        "storage": _net("192.168.125.0", "intf1", 200, True, {"host": ("192.168.125.10", "192.168.125.239")}),
        "public": _net("192.168.126.0", "intf1", 300, True, {"host": ("192.168.126.2", "192.168.126.127")},
                       router="192.168.126.1", router_pref=5),
        "nova_floating": _net("192.168.126.128", "intf1", 300, True,
                              {"host": ("192.168.126.129", "192.168.126.254")}, netmask="255.255.255.128",
                              broadcast="192.168.126.255", shares=("public",)),
        "nova_fixed": _net("192.168.123.0", "intf1", 500, True, {"router": ("192.168.123.2", "192.168.123.49"),
                                                               "dhcp": ("192.168.123.50", "192.168.123.254")},
                           router="192.168.123.1", router_pref=20),
        "os_sdn": _net("192.168.130.0", "intf1", 400, True, {"host": ("192.168.130.10", "192.168.130.254")}),
    }


def default_conduit_map() -> list[ConduitMapEntry]:
    """Team: every conduit bonds the first two 1 Gb NICs; dual: one NIC each; single: all on the first."""
    def entry(pattern: str, lists: dict[str, list[str]]) -> ConduitMapEntry:
        return ConduitMapEntry(pattern=pattern, conduit_list={k: ConduitDef(if_list=v) for k, v in lists.items()})

    return [
        entry("team/.*/.*", {"intf0": ["1g1", "1g2"], "intf1": ["1g1", "1g2"], "intf2": ["1g1", "1g2"]}),
        entry("dual/.*/.*", {"intf0": ["?1g1"], "intf1": ["?1g2"], "intf2": ["?1g1"]}),
        entry("single/.*/.*", {"intf0": ["?1g1"], "intf1": ["?1g1"], "intf2": ["?1g1"]}),
    ]


class NetworkAttributes(Attributes):
    start_up_delay: int = Field(30, ge=0)
    enable_tx_offloading: bool = False
    mode: Literal["single", "dual", "team"] = "single"
    teaming: Teaming = Teaming()
    conduit_map: list[ConduitMapEntry] = Field(default_factory=default_conduit_map)
    networks: dict[str, NetworkDef] = Field(default_factory=default_networks)


def nics_of(machine: Machine) -> list[Nic]:
    """The physical NICs the inventory reports (no bridge, bond, veth, tun/tap, ifb, VLAN, loopback), at the
    link speed Ohai reports (unknown: 1 Gb)."""
    return [Nic(i.name, i.speed or 1000) for i in machine.interfaces if i.physical and i.mac]


def conduits_of(settings: NetworkAttributes, nics: list[Nic], roles: list[str] | None = None) -> dict[str, Conduit]:
    """A machine's conduits under ``settings`` (see :mod:`barclamps.network.conduits`)."""
    conduit_map = [e.model_dump() for e in settings.conduit_map]
    return resolve(conduit_map, settings.mode, settings.teaming.mode, nics, roles or ())


class Network(Barclamp):
    name = "network"
    display_name = "Network"
    description = "Networks, conduits and every machine's addresses (server-mastered)"
    order = 20
    allow_multiple_proposals = False
    Attributes = NetworkAttributes
    elements = (Element("network", recipes=("network",), priority=20),)
    element_order = (("network",),)
    transition_states = ("discovering", "discovered", "delete")

    def create_proposal(self, proposal, inventory, ctx):
        proposal.note("networks are Crowbar's usual layout; machines get admin (and bmc) addresses when "
                      "discovered once this proposal is committed")

    def validate(self, proposal, ctx):
        settings: NetworkAttributes = proposal.settings
        conduits = {c for entry in settings.conduit_map for c in entry.conduit_list}
        for entry in settings.conduit_map:
            try:
                re.compile(entry.pattern)
            except re.error as exc:
                yield f"conduit_map pattern {entry.pattern!r} is not a regular expression ({exc})"
            for conduit, spec in entry.conduit_list.items():
                for token in spec.if_list:
                    problem = check_token(token)
                    if problem:
                        yield f"conduit_map {entry.pattern} {conduit}: {problem}"
        networks = {n: d.model_dump() for n, d in settings.networks.items()}
        for name, net in settings.networks.items():
            if not name.replace("_", "").isalnum() or not name[:1].isalpha() or name != name.lower():
                yield f"network name {name!r}: use lower-case letters, digits and '_'"
            for other in net.share_segment_with:
                if other not in settings.networks:
                    yield f"network {name}: share_segment_with names {other!r}, which is no network"
        yield from check_networks(networks, conduits)

    def apply_post(self, ctx, old, new):
        """Renumbering: machines whose address left its range (a range or subnet edited) move, in waves."""
        for name in sorted(new.settings.networks):
            if ctx.network(name) is not None:
                moved = ctx.addresses.renumber(name)
                if moved:
                    ctx.log.info("renumbered %d machine(s) on %s", len(moved), name)

    def on_transition(self, ctx, proposal, machine, state):
        if proposal.name != "default":
            return
        if state == "delete":
            ctx.release_addresses([machine.name])
            return
        wanted = ["admin"] + ([] if machine.is_virtual else ["bmc"])
        problems = []
        for network in wanted:
            if network not in proposal.settings.networks:
                continue
            report = ctx.allocate_addresses(network, [machine.name], user=DISCOVERY_USER)
            problems += [f"no {network} address: {why}" for why in report.refused.values()]
        if problems:
            raise CrowbarError("; ".join(problems))

