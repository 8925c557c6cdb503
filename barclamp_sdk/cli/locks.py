"""``crowbar locks``: the lock items of crowbar_locks."""

from __future__ import annotations

import click

from barclamp_sdk.cli.context import CLIState, output_options, pass_state


@click.group()
def locks() -> None:
    """Locks that commands hold on the Chef server (crowbar_locks)."""


@locks.command("sweep")
@output_options
@pass_state
def locks_sweep(state: CLIState) -> None:
    """Remove expired lock items left by crashed commands (a live holder keeps its lock)."""
    removed = state.crowbar().locks.sweep()
    state.emit({"removed": removed},
               lambda: f"removed {len(removed)} expired lock item(s)" + (f": {', '.join(removed)}" if removed else ""))
