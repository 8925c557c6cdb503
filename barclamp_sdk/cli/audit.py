"""``crowbar audit``: who changed what, when, and how it went."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from barclamp_sdk.cli.context import CLIState, output_options, pass_state, plain


def _details(entry: dict[str, Any]) -> str:
    details = entry.get("details") or {}
    shown = []
    for key, value in details.items():
        if value in (None, "", [], {}, False):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        shown.append(f"{key}={value}")
    return "; ".join(shown)


@click.command()
@click.option("--since", metavar="T", help="Only entries since T: a time (2026-12-02T04:00:00Z) or a duration (2h, 7d).")
@click.option("--proposal", metavar="BARCLAMP/NAME", help="Only entries about this proposal.")
@click.option("--machine", metavar="NAME", help="Only entries about this machine.")
@click.option("--action", metavar="ACTION", help="Only this action (edit, commit, revert, deactivate, ...).")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True,
              help="At most this many (the newest).")
@output_options
@pass_state
def audit(state: CLIState, since: str | None, proposal: str | None, machine: str | None, action: str | None,
          limit: int) -> None:
    """The audit trail, oldest first: every operator action, who did it, and how it went."""
    entries = state.crowbar().audit.entries(since=since, proposal=proposal, machine=machine, action=action,
                                            limit=limit)

    def table() -> Table | str:
        if not entries:
            return "no audit entries" + (" match" if since or proposal or machine or action else " yet")
        grid = Table(box=None, header_style="bold")
        for column in ("AT", "ACTION", "TARGET", "REV", "OUTCOME", "BY", "DETAILS"):
            grid.add_column(column)
        for entry in entries:
            by = entry.get("by") or {}
            grid.add_row(plain(entry.get("at", "")), plain(entry.get("action", "")), plain(entry.get("target", "")),
                         plain(entry.get("revision") if entry.get("revision") is not None else "-"),
                         plain(entry.get("outcome", "")),
                         plain(f"{by.get('user', '?')}@{by.get('host', '?')} ({by.get('client', '?')})"),
                         plain(_details(entry)))
        return grid

    state.emit(entries, table)
