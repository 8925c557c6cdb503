"""Applying BIOS settings: BMC work per machine, results into the roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from barclamp_sdk.bmc import BMC, BMCEndpoint
from barclamp_sdk.cli.context import plain
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
    certificate: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "certificate"}


def _endpoint(machine: Any, username: str, password: str, pinned: str | None) -> BMCEndpoint:
    bmc = machine.bmc
    return BMCEndpoint(bmc.address, username, password, ipmi_port=bmc.ipmi_port, redfish_port=bmc.redfish_port,
                       redfish_system=bmc.redfish_system, certificate_sha256=pinned)


def _apply_one(machine: Any, roles: list[str], settings: Any, password: str, pinned: str | None) -> BiosResult:
    bios_set, raid_set, why = choose_sets(settings.bios_map, roles)
    family = family_of(machine)
    result = BiosResult(machine.name, "applied", bios_set, raid_set, family["family"])
    if machine.bmc is None:
        result.status, result.reason = "skipped", "no known BMC (nothing under crowbar_wall.bmc)"
        return result
    endpoint = _endpoint(machine, settings.bmc_username, password, pinned)
    bmc = BMC(endpoint)
    try:
        current = bmc.bios_settings()
        wanted = target_settings(machine, bios_set)
        result.unsupported = sorted(k for k in wanted if k not in current)
        changes = {k: v for k, v in wanted.items() if k in current and current[k] != v}
        bmc.set_bios_settings(changes)
        if changes:
            # pyghmi caches Redfish reads for 30 s: verify on a fresh session.
            check = BMC(_endpoint(machine, settings.bmc_username, password, bmc.certificate_sha256))
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
    result.certificate = bmc.certificate_sha256
    result.reason = result.reason or f"{bios_set}: {why}"
    return result


def apply(ctx: Any, proposal: Any, names: list[str], *,
          progress: Callable[[int], None] | None = None) -> list[BiosResult]:
    """Set the BIOS of ``names`` (machines of ``proposal``) and record the results."""
    crowbar = ctx.crowbar
    settings = proposal.settings
    if settings.bmc_password is None:
        raise ValidationError(f"bmc_password is not set in bios/{proposal.name}")
    password = crowbar.secrets.get(settings.bmc_password)
    managed = set(proposal.elements.get("bios-settings", []))
    outside = [n for n in names if n not in managed]
    if outside:
        raise ValidationError(f"{', '.join(outside)} not in bios/{proposal.name}'s bios-settings; add them first")
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
        pinned = record.hardware.get("bmc_certificate")
        result = _apply_one(inventory.get(name), roles, settings, password, pinned)
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
            if result.certificate and not hardware.get("bmc_certificate"):
                hardware["bmc_certificate"] = result.certificate  # trust on first use
            hardware["bios"] = {"status": result.status, "at": now_iso(), "family": result.family,
                                "changed": sorted(result.changed), "unsupported": result.unsupported,
                                "reason": result.reason}
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
        table.add_row(plain(r.machine), f"[{style}]{plain(r.status)}[/{style}]" if style else plain(r.status),
                      plain(f"{r.bios_set} ({r.family})"),
                      plain(", ".join(f"{k}={v}" for k, v in r.changed.items()) or "-"),
                      plain(r.power or "-"), plain(r.reason or "-"))
    return table
