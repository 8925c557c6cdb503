"""bios: BIOS settings through each machine's BMC, out of band.

Crowbar paused machines after discovery so that BIOS (and RAID) could be set
once the operator had decided what each machine is for. This barclamp keeps
that: when a machine of a committed bios proposal enters
``hardware-installing`` (or on demand, ``crowbar bios apply NAME...``), it
picks a settings set from the roles the machine holds or has pending
(``bios_map``, as Crowbar's deployer did: nova-* -> Virtualization, swift-*
and ceph-osd -> Storage, else default), reads the current BIOS attributes
over Redfish, sets only what differs, reads them back on a fresh session,
and asks IPMI for the power state and a network boot next.

Settings sets are data (``sets/*.json``): per product family, with a generic
fallback; a set overlays the family's ``default``. Results, the set and the
RAID set chosen go into the machine's ``crowbar-<node>`` role; a BMC that
cannot be reached, refuses the password or rejects a value puts the machine
in ``problem`` with the reason.

Credentials go only to a machine's *confirmed* BMC (server-mastered, its
Redfish certificate pinned: :mod:`barclamp_sdk.bmctrust`), never to the
address the node reports; a machine without one is skipped with the reason.
Only the committed revision of a proposal is ever applied.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import click

from barclamp_sdk import Attributes, Barclamp, Element, Secret
from barclamp_sdk.cli.context import output_options
from barclamp_sdk.states import LIFECYCLE

SETS_DIR = Path(__file__).parent / "sets"


class MapEntry(Attributes):
    pattern: str
    bios_set: str
    raid_set: str


class BiosAttributes(Attributes):
    bmc_username: str = "root"
    bmc_password: Secret = None
    boot_from_network: bool = True
    bios_map: list[MapEntry] = [
        MapEntry(pattern="nova-.*", bios_set="Virtualization", raid_set="SingleRaid10"),
        MapEntry(pattern="swift-.*", bios_set="Storage", raid_set="JBODOnly"),
        MapEntry(pattern="ceph-osd", bios_set="Storage", raid_set="JBODOnly"),
        MapEntry(pattern=".*", bios_set="default", raid_set="SingleRaid10"),
    ]


@cache
def families() -> list[dict[str, Any]]:
    """The settings-set files, most specific first (generic last)."""
    loaded = [json.loads(path.read_text()) for path in sorted(SETS_DIR.glob("*.json"))]
    return sorted(loaded, key=lambda f: not f.get("match"))


def family_of(machine: Any) -> dict[str, Any]:
    for family in families():
        match = family.get("match") or {}
        if (match.get("manufacturer", "") in machine.manufacturer
                and machine.product.startswith(match.get("product_prefix", ""))):
            return family
    raise LookupError("no generic settings set")


def choose_sets(bios_map: list[MapEntry], roles: list[str]) -> tuple[str, str, str]:
    """(bios_set, raid_set, why) from the first map entry a role matches.

    A machine with no roles yet is matched as the empty role (so ``.*`` applies).
    """
    for entry in bios_map:
        for role in roles or [""]:
            if re.fullmatch(entry.pattern, role):
                return entry.bios_set, entry.raid_set, f"because of {role}" if role else "no roles yet"
    return "default", "", "no bios_map entry matched"


def target_settings(machine: Any, bios_set: str) -> dict[str, str]:
    """The family's default set with ``bios_set`` laid over it."""
    sets = family_of(machine)["sets"]
    return {**sets.get("default", {}), **sets.get(bios_set, {})}


class Bios(Barclamp):
    name = "bios"
    display_name = "BIOS"
    description = "BIOS settings set through the BMC (Redfish and IPMI)"
    order = 17
    Attributes = BiosAttributes
    elements = (
        Element("bios-settings", priority=17, states=("hardware-installing", "hardware-updating"),
                description="machines whose BIOS barclamp-sdk sets through their BMC"),
    )
    transition_states = ("hardware-installing",)
    ready_states = LIFECYCLE

    def create_proposal(self, proposal, inventory, ctx):
        managed = [m.name for m in inventory.candidates() if m.bmc is not None]
        skipped = [m.name for m in inventory.candidates() if m.bmc is None]
        proposal.assign("bios-settings", *managed)
        proposal.note(f"BIOS set through the BMC of {len(managed)} machine(s)")
        if skipped:
            proposal.note(f"skipped {len(skipped)} machine(s) with no known BMC ({', '.join(skipped[:4])}"
                          f"{' ...' if len(skipped) > 4 else ''}): they report none under crowbar_wall.bmc")
        if managed:
            proposal.note("credentials go only to confirmed BMC addresses: check each, then "
                          "`crowbar machines bmc confirm NAME` (a machine without one is skipped)")

    def validate(self, proposal, ctx):
        for index, entry in enumerate(proposal.settings.bios_map):
            try:
                re.compile(entry.pattern)
            except re.error as exc:
                yield f"bios_map[{index}].pattern {entry.pattern!r} is not a regular expression: {exc}"
        if not ctx.draft and proposal.settings.bmc_password is None:
            yield f"bmc_password is not set; set it with `crowbar bios proposal edit {proposal.name} --set bmc_password=...`"

    def on_transition(self, ctx, proposal, machine, state):
        from barclamps.bios.apply import apply, committed_revision

        committed = committed_revision(ctx.crowbar, proposal.name)  # never the editable revision
        if machine.name in committed.elements.get("bios-settings", []):
            apply(ctx, committed, [machine.name])

    def cli_commands(self):
        return [apply_command]


@click.command("apply")
@click.argument("names", nargs=-1, required=True)
@click.option("--proposal", "proposal_name", default="default", show_default=True)
@output_options
@click.pass_context
def apply_command(ctx: click.Context, names: tuple[str, ...], proposal_name: str) -> int:
    """Set the BIOS of machines NAMES now, through their BMCs."""
    from barclamp_sdk.cli.context import CLIState, progress
    from barclamp_sdk.context import Context
    from barclamps.bios.apply import apply, results_table

    state = ctx.ensure_object(CLIState)
    crowbar = state.crowbar()
    barclamp = crowbar.barclamps.get("bios")
    proposal = crowbar.proposals.get("bios", proposal_name)
    with progress(state, len(names), "setting BIOS") as advance:
        results = apply(Context(crowbar, barclamp), proposal, list(names), progress=advance)
    state.emit([r.as_dict() for r in results], lambda: results_table(results))
    for warning in (w for r in results for w in r.warnings):
        click.echo(f"warning: {warning}", err=True)
    failed = [r for r in results if r.status == "problem"]
    if failed:
        click.echo(f"error: {len(failed)} of {len(results)} machine(s) are in problem (see above); "
                   "fix their BMCs and run `crowbar bios apply` again", err=True)
        return 1
    skipped = [r for r in results if r.status == "skipped"]
    if skipped:
        click.echo(f"error: {len(skipped)} of {len(results)} machine(s) skipped, nothing sent to their BMCs: "
                   + "; ".join(f"{r.machine}: {r.reason}" for r in skipped), err=True)
        return 1
    return 0
