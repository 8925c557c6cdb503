"""Applying BIOS settings: BMC work per machine, results into the roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from barclamp_sdk.bmc import BMC, BMCEndpoint
from barclamp_sdk.bmctrust import ConfirmedBMC, endpoint_text, report_warnings
from barclamp_sdk.errors import BMCError, CrowbarError, ValidationError
from barclamp_sdk.noderoles import crowbar_data, now_iso
from barclamp_sdk.parallel import run_parallel
from barclamps.bios import choose_sets, family_of, target_settings


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
    #: What the node reports about its BMC that is not used (see barclamp_sdk.bmctrust).
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _endpoint(bmc: ConfirmedBMC, username: str, password: str) -> BMCEndpoint:
    """Where credentials go: the confirmed endpoint, its certificate pinned; never the node's report."""
    return BMCEndpoint(bmc.address, username, password, ipmi_port=bmc.ipmi_port, redfish_port=bmc.redfish_port,
                       redfish_system=bmc.redfish_system, certificate_sha256=bmc.certificate_sha256)


def _apply_one(machine: Any, confirmed: ConfirmedBMC | None, roles: list[str], settings: Any,
               password: str) -> BiosResult:
    bios_set, raid_set, why = choose_sets(settings.bios_map, roles)
    family = family_of(machine)
    result = BiosResult(machine.name, "applied", bios_set, raid_set, family["family"])
    result.warnings = report_warnings(machine.name, confirmed, machine.bmc) if confirmed else []
    if confirmed is None:
        reported = machine.bmc
        told = (f"; the node reports {endpoint_text(reported.address, reported.ipmi_port, reported.redfish_port)}, "
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


def committed_revision(crowbar: Any, name: str) -> Any:
    """The revision of bios/``name`` last committed (never the editable one), or a ValidationError."""
    applied = crowbar.proposals.applied("bios", name)
    if applied is None:
        raise ValidationError(f"bios/{name} is not committed; `crowbar bios apply` acts on committed proposals "
                              f"only: commit it first (`crowbar bios proposal commit {name}`)")
    return applied


def apply(ctx: Any, proposal: Any, names: list[str], *,
          progress: Callable[[int], None] | None = None) -> list[BiosResult]:
    """Set the BIOS of ``names`` as the committed revision of ``proposal`` says, and record the results.

    Credentials go only to each machine's confirmed BMC (``crowbar.machines.bmc``),
    whose Redfish certificate must match the one pinned; a machine without
    one is skipped with the reason.
    """
    crowbar = ctx.crowbar
    proposal = committed_revision(crowbar, proposal.name)
    settings = proposal.settings
    if settings.bmc_password is None:
        raise ValidationError(f"bmc_password is not set in bios/{proposal.name}")
    password = crowbar.secrets.get(settings.bmc_password)
    managed = set(proposal.elements.get("bios-settings", []))
    outside = [n for n in names if n not in managed]
    if outside:
        raise ValidationError(f"{', '.join(outside)} not in the bios-settings of bios/{proposal.name} as committed "
                              f"(r{proposal.revision}); add them and commit first")
    inventory = crowbar.machines.inventory(names)
    cluster = crowbar.machines.cluster()
    missing = [n for n in names if inventory.get(n) is None or cluster.get(n) is None]
    if missing:
        raise ValidationError(f"no machine {missing[0]!r}; see `crowbar machines list`")

    def work(name: str) -> BiosResult:
        record = cluster.get(name)
        own = {e.name for e in proposal.definition.elements}
        roles = [r for r in (*record.elements, *(e for elements in record.pending.values() for e in elements))
                 if r not in own]
        confirmed = crowbar.machines.bmc.get(name)  # from the role's object endpoint, under no node's control
        result = _apply_one(inventory.get(name), confirmed, roles, settings, password)
        if progress is not None:
            progress(1)
        return result

    results = run_parallel(work, names, workers=8, name="bios")
    _record(crowbar, results)
    return results


def _record(crowbar: Any, results: list[BiosResult]) -> None:
    """Status and sets into each machine's role; failures put it in problem."""
    def mutation(result: BiosResult) -> Callable[[dict[str, Any]], bool]:
        def change(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            hardware = data.setdefault("hardware", {})
            hardware["bios_set"] = result.bios_set
            hardware["raid_set"] = result.raid_set
            hardware["bios"] = {"status": result.status, "at": now_iso(), "family": result.family,
                                "changed": sorted(result.changed), "unsupported": result.unsupported,
                                "reason": result.reason, "warnings": result.warnings}
            if result.status == "problem":
                data["state"] = "problem"
                data["state_change_time"] = now_iso()
                data["problem"] = {"reason": f"bios: {result.reason}", "at": now_iso()}
            return True
        return change

    report = crowbar.machines.roles.update({r.machine: mutation(r) for r in results if r.status != "skipped"},
                                           purpose="record BIOS results")
    if report.failed:
        name, error = next(iter(report.failed.items()))
        raise CrowbarError(f"could not record the BIOS result of {name}: {error}")


def results_table(results: list[BiosResult]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("MACHINE", "STATUS", "SET", "CHANGED", "POWER", "REASON"):
        table.add_column(column)
    for r in results:
        style = {"problem": "red", "applied": "green", "skipped": "yellow"}.get(r.status, "")
        table.add_row(r.machine, f"[{style}]{r.status}[/{style}]" if style else r.status,
                      f"{r.bios_set} ({r.family})", ", ".join(f"{k}={v}" for k, v in r.changed.items()) or "-",
                      r.power or "-", r.reason or "-")
    return table
