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
Redfish certificate pinned: :mod:`barclamp_sdk.model.bmctrust`), never to the
address the node reports; a machine without one is skipped with the reason.
Only the committed revision of a proposal is ever applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from barclamp_sdk import LIFECYCLE, Action, ActionResult, Attributes, Barclamp, Element, Secret
from barclamps.bios.apply import apply, committed_revision
from barclamps.bios.choice import MapEntry, choose_sets, families, family_of, target_settings

__all__ = ["Bios", "BiosAttributes", "MapEntry", "choose_sets", "families", "family_of", "target_settings"]


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


def apply_action(crowbar: Any, proposal_name: str, names: list[str],
                 progress: Callable[[int], None] | None) -> ActionResult:
    """``crowbar bios apply NAMES``: set the BIOS of machines now, through their BMCs."""
    proposal = crowbar.proposals.get("bios", proposal_name)
    results = apply(crowbar.context("bios"), proposal, names, progress=progress)
    failed = [r for r in results if r.status == "problem"]
    skipped = [r for r in results if r.status == "skipped"]
    error = None
    if failed:
        error = (f"{len(failed)} of {len(results)} machine(s) are in problem (see above); "
                 "fix their BMCs and run `crowbar bios apply` again")
    elif skipped:
        error = (f"{len(skipped)} of {len(results)} machine(s) skipped, nothing sent to their BMCs: "
                 + "; ".join(f"{r.machine}: {r.reason}" for r in skipped))
    return ActionResult([r.as_dict() for r in results], RESULT_COLUMNS, error,
                        warnings=[w for r in results for w in r.warnings])


RESULT_COLUMNS = ("machine", "status", "bios_set", "family", "changed", "power", "reason")


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
    actions = (Action("apply", "Set the BIOS of machines MACHINES now, through their BMCs.", apply_action),)

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
        committed = committed_revision(ctx, proposal.name)  # never the editable revision
        if machine.name in committed.elements.get("bios-settings", []):
            apply(ctx, committed, [machine.name])

