"""Applying BIOS settings: BMC work per machine, results into the roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk import (
    BMC,
    BMCEndpoint,
    BMCError,
    ConfirmedBMC,
    Context,
    Proposal,
    ValidationError,
    bmc_endpoint_text,
    bmc_report_warnings,
    now_iso,
    run_parallel,
)
from barclamps.bios.choice import choose_sets, family_of, target_settings


@dataclass
class BiosResult:
    """What happened to one machine."""

    machine: str
    status: str  # applied | unchanged | skipped | problem
    bios_set: str = ""
    raid_set: str = ""
    family: str = ""
    changed: dict[str, Any] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)
    power: str = ""
    reason: str = ""
    #: What the node reports about its BMC that is not used (see barclamp_sdk.model.bmctrust).
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _endpoint(bmc: ConfirmedBMC, username: str, password: str) -> BMCEndpoint:
    """Where credentials go: the confirmed endpoint, its certificate pinned; never the node's report."""
    return BMCEndpoint(bmc.address, username, password, ipmi_port=bmc.ipmi_port, redfish_port=bmc.redfish_port,
                       redfish_system=bmc.redfish_system, certificate_sha256=bmc.certificate_sha256)


def _apply_one(machine: Any, confirmed: ConfirmedBMC | None, roles: list[str], settings: Any,
               password: str, refused: str | None = None) -> BiosResult:
    bios_set, raid_set, why = choose_sets(settings.bios_map, roles)
    family = family_of(machine)
    result = BiosResult(machine.name, "applied", bios_set, raid_set, family["family"])
    if refused is not None:
        result.status, result.reason = "skipped", refused
        return result
    result.warnings = bmc_report_warnings(machine.name, confirmed, machine.bmc) if confirmed else []
    if confirmed is None:
        reported = machine.bmc
        told = (f"; the node reports {bmc_endpoint_text(reported.address, reported.ipmi_port, reported.redfish_port)}, "
                "never used with credentials" if reported else "")
        result.status = "skipped"
        result.reason = (f"no confirmed BMC address{told}; check it, then "
                         f"`crowbar machines bmc confirm {machine.name}`")
        return result
    if not confirmed.certificate_sha256:
        result.status = "skipped"
        result.reason = (f"the Redfish certificate of its BMC {confirmed.address} is not pinned; "
                         f"`crowbar machines bmc confirm {machine.name}` pins it")
        return result
    endpoint = _endpoint(confirmed, settings.bmc_username, password)
    bmc = BMC(endpoint)
    try:
        current = bmc.bios_settings()
        wanted = target_settings(machine, bios_set)
        result.unsupported = sorted(k for k in wanted if k not in current)
        changes = {k: v for k, v in wanted.items() if k in current and current[k] != v}
        bmc.set_bios_settings(changes)
        if changes:
            # pyghmi caches Redfish reads for 30 s: verify on a fresh session.
            check = BMC(endpoint)
            after = check.bios_settings()
            wrong = {k: after.get(k) for k, v in changes.items() if after.get(k) != v}
            if wrong:
                raise BMCError(f"BMC {endpoint.address}: read back {wrong} after setting them; "
                               "the BMC did not keep the change")
        result.changed = changes
        result.status = "applied" if changes else "unchanged"
        if settings.boot_from_network:
            bmc.boot_from_network_next()
        result.power = bmc.power_state()
    except BMCError as exc:
        result.status, result.reason = "problem", str(exc)
    result.reason = result.reason or f"{bios_set}: {why}"
    return result


def committed_revision(ctx: Context, name: str) -> Proposal:
    """The revision of bios/``name`` last committed (never the editable one), or a ValidationError."""
    applied = ctx.applied("bios", name)
    if applied is None:
        raise ValidationError(f"bios/{name} is not committed; `crowbar bios apply` acts on committed proposals "
                              f"only: commit it first (`crowbar bios proposal commit {name}`)")
    return applied


def apply(ctx: Context, proposal: Proposal, names: list[str], *,
          progress: Callable[[int], None] | None = None) -> list[BiosResult]:
    """Set the BIOS of ``names`` as the committed revision of ``proposal`` says, and record the results.

    Credentials go only to each machine's confirmed BMC (``crowbar.machines.bmc``),
    whose Redfish certificate must match the one pinned; a machine without
    one is skipped with the reason.
    """
    proposal = committed_revision(ctx, proposal.name)
    settings = proposal.settings
    if settings.bmc_password is None:
        raise ValidationError(f"bmc_password is not set in bios/{proposal.name}")
    password = ctx.secret(settings.bmc_password)
    managed = set(proposal.elements.get("bios-settings", []))
    outside = [n for n in names if n not in managed]
    if outside:
        raise ValidationError(f"{', '.join(outside)} not in the bios-settings of bios/{proposal.name} as committed "
                              f"(r{proposal.revision}); add them and commit first")
    inventory = ctx.inventory(names)
    cluster = ctx.machines(names)  # only these machines: a transition must not read the whole cluster
    missing = [n for n in names if inventory.get(n) is None or cluster.get(n) is None]
    if missing:
        raise ValidationError(f"no machine {missing[0]!r}; see `crowbar machines list`")

    # With the network barclamp committed, a BMC is only ever reached at the machine's bmc allocation.
    bmc_managed = ctx.network("bmc") is not None

    def work(name: str) -> BiosResult:
        record = cluster.get(name)
        assert record is not None
        own = {e.name for e in proposal.definition.elements}
        roles = [r for r in (*record.elements, *(e for elements in record.pending.values() for e in elements))
                 if r not in own]
        confirmed = ctx.confirmed_bmc(name)  # from the role's object endpoint, under no node's control
        refused = None
        if bmc_managed and confirmed is not None:
            allocated = ctx.address_of(name, "bmc")
            if confirmed.address != allocated:
                refused = (f"its confirmed BMC {confirmed.address} is not its bmc allocation "
                           f"({allocated or 'none'}); credentials go only to the allocated address: "
                           f"confirm that one with `crowbar machines bmc confirm {name} --address ADDRESS`")
        result = _apply_one(inventory.get(name), confirmed, roles, settings, password, refused)
        if progress is not None:
            progress(1)
        return result

    results = run_parallel(work, names, workers=8, name="bios")
    _record(ctx, results)
    return results


def _record(ctx: Context, results: list[BiosResult]) -> None:
    """Status and sets into each machine's record; failures put it in problem."""
    hardware = {
        r.machine: {"bios_set": r.bios_set, "raid_set": r.raid_set,
                    "bios": {"status": r.status, "at": now_iso(), "family": r.family, "changed": sorted(r.changed),
                             "unsupported": r.unsupported, "reason": r.reason, "warnings": r.warnings}}
        for r in results if r.status != "skipped"}
    ctx.record_hardware(hardware, {r.machine: r.reason for r in results if r.status == "problem"})


