"""``crowbar network allocations|free|check``: the address book, added to the network barclamp's group."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from barclamp_sdk import NetworkSpec
from barclamp_sdk.cli.context import CLIState, output_options, pass_state, plain

COLUMNS = ("network", "address", "machine", "users")


def _table(rows: list[dict[str, Any]]) -> Table:
    grid = Table(box=None, header_style="bold")
    for column in COLUMNS:
        grid.add_column(column.upper())
    for row in rows:
        grid.add_row(*(plain(", ".join(v) if isinstance(v, list) else str(v if v is not None else "-"))
                       for v in (row.get(c) for c in COLUMNS)))
    return grid


@click.command("allocations")
@click.option("--network", help="Only this network.")
@click.option("--machine", help="Only this machine (read from its role, no search).")
@output_options
@pass_state
def allocations(state: CLIState, network: str | None, machine: str | None) -> None:
    """Allocated addresses: one row per address."""
    rows = state.crowbar().addresses.allocations(network=network, machine=machine)
    state.emit(rows, lambda: _table(rows))


@click.command("free")
@click.argument("machine")
@click.argument("network")
@output_options
@pass_state
def free(state: CLIState, machine: str, network: str) -> None:
    """Free MACHINE's address on NETWORK (whoever uses it)."""
    freed = state.crowbar().addresses.free(machine, network)
    result = {"machine": machine, "network": network, "freed": freed}
    state.emit(result, lambda: f"freed the {network} address of {machine}" if freed
               else f"{machine} had no {network} address: nothing to do")


@click.command("check")
@click.option("--repair", is_flag=True, help="Free orphaned items (claimed by a machine whose role does not name them).")
@output_options
@pass_state
def check(state: CLIState, repair: bool) -> int:
    """Compare address items with machines' roles (orphans, duplicates, missing); exit 1 if any."""
    found = state.crowbar().addresses.check(repair=repair)
    state.emit(found, lambda: "\n".join(f"{kind}: {len(rows)}" for kind, rows in found.items()))
    return 1 if any(found.values()) else 0


@click.command("renumber")
@click.option("--dry-run", is_flag=True, required=True,
              help="List every machine whose address changes under the proposal as edited (old -> new).")
@click.option("--proposal", "proposal_name", default="default", show_default=True)
@output_options
@pass_state
def renumber(state: CLIState, dry_run: bool, proposal_name: str) -> None:
    """The renumbering plan of the edited proposal; committing it applies the plan, in waves."""
    crowbar = state.crowbar()
    document = crowbar.proposals.get("network", proposal_name)
    rows = []
    for name, data in sorted((document.attributes.get("networks") or {}).items()):
        rows += crowbar.addresses.renumber_plan(name, NetworkSpec.parse(name, data))

    def table() -> Table | str:
        if not rows:
            return "no address changes"
        grid = Table(box=None, header_style="bold")
        for column in ("machine", "network", "old", "new"):
            grid.add_column(column.upper())
        for row in rows:
            grid.add_row(*(plain(str(row[c] or "- (range full)")) for c in ("machine", "network", "old", "new")))
        return grid

    state.emit(rows, table)


def extend(group: click.Group) -> click.Group:
    """Add the address commands to the ``network`` barclamp's group."""
    for command in (allocations, free, check, renumber):
        group.add_command(command)
    return group
