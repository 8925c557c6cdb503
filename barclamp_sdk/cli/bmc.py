"""``crowbar machines bmc``: the BMC endpoints credentials may go to (see barclamp_sdk.model.bmctrust)."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from barclamp_sdk.cli.complete import machine_names
from barclamp_sdk.cli.context import CLIState, output_options, pass_state


def bmc_rows(shown: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, rich markup) rows describing a machine's confirmed and reported BMC."""
    confirmed = shown.get("confirmed")
    reported = shown.get("reported")
    rows = []
    if confirmed:
        pin = confirmed.get("certificate_sha256") or ""
        rows.append(("bmc", escape(f"{confirmed['address']} (IPMI {confirmed['ipmi_port']}, "
                                   f"Redfish {confirmed['redfish_port']}), confirmed by "
                                   f"{confirmed.get('confirmed_by') or '?'} ({confirmed.get('source')}) "
                                   f"at {confirmed.get('confirmed_at') or '?'}")))
        rows.append(("bmc certificate", escape(f"sha256 {pin}") if pin else "[red]not pinned[/red]"))
    else:
        rows.append(("bmc", "[yellow]not confirmed: nothing is sent to any BMC of this machine[/yellow]"))
    if reported:
        rows.append(("bmc reported", escape(f"{reported['address']} (IPMI {reported['ipmi_port']}, "
                                            f"Redfish {reported.get('redfish_port') or 443}) by the node")))
    for warning in shown.get("warnings") or []:
        rows.append(("warning", f"[yellow]{escape(warning)}[/yellow]"))
    return rows


@click.group()
def bmc() -> None:
    """The BMC address (and pinned certificate) credentials may go to, per machine."""


@bmc.command("show")
@click.argument("name", shell_complete=machine_names)
@output_options
@pass_state
def bmc_show(state: CLIState, name: str) -> None:
    """The confirmed BMC of a machine and what the node itself reports."""
    shown = state.crowbar().machines.bmc.show(name)

    def table() -> Table:
        grid = Table.grid(padding=(0, 2))
        for key, value in bmc_rows(shown):
            grid.add_row(f"[bold]{key}[/bold]", value)
        return grid

    state.emit(shown, table)
    for warning in shown["warnings"]:
        if state.machine_readable:
            click.echo(f"warning: {warning}", err=True)


@bmc.command("confirm")
@click.argument("name", shell_complete=machine_names)
@click.option("--address", help="The BMC's address (default: the one the node reports, once you checked it).")
@click.option("--ipmi-port", type=click.IntRange(1, 65535), help="IPMI (UDP) port [623].")
@click.option("--redfish-port", type=click.IntRange(1, 65535), help="Redfish (HTTPS) port [443].")
@click.option("--redfish-system", help="Redfish system path, e.g. /redfish/v1/Systems/1 (default: the BMC's only one).")
@click.option("--interface", help="The BMC's interface or network (recorded for reference).")
@click.option("--certificate", "certificate_sha256", metavar="SHA256",
              help="The Redfish certificate's SHA-256 known out of band; it must match what the BMC presents.")
@click.option("--by", help="Who checked it, for the record (default: the Chef client name).")
@output_options
@pass_state
def bmc_confirm(state: CLIState, name: str, address: str | None, ipmi_port: int | None, redfish_port: int | None,
                redfish_system: str | None, interface: str | None, certificate_sha256: str | None,
                by: str | None) -> None:
    """Record NAME's BMC endpoint as the one credentials may go to; pin its Redfish certificate.

    Without --address, the endpoint the node reports is taken: check it first
    (`crowbar machines bmc show NAME`), since the node writes that report itself.
    """
    confirmed = state.crowbar().machines.bmc.confirm(
        name, address, ipmi_port=ipmi_port, redfish_port=redfish_port, redfish_system=redfish_system,
        interface=interface, certificate_sha256=certificate_sha256, by=by)
    state.emit(confirmed.model_dump(),
               lambda: f"{name}: BMC {confirmed.where()} confirmed; Redfish certificate pinned "
                       f"(sha256 {confirmed.certificate_sha256})")


@bmc.command("forget")
@click.argument("name", shell_complete=machine_names)
@output_options
@pass_state
def bmc_forget(state: CLIState, name: str) -> None:
    """Drop NAME's confirmed BMC: nothing goes to its BMC until it is confirmed again."""
    dropped = state.crowbar().machines.bmc.forget(name)
    state.emit({"machine": name, "forgotten": dropped},
               lambda: f"{name}: confirmed BMC dropped" if dropped else f"{name}: no confirmed BMC")
