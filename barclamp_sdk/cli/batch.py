"""``crowbar batch`` (a deployment as one file) and ``crowbar completion``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from barclamp_sdk import dump_scenario, inputs, parse_scenario
from barclamp_sdk.cli.context import EXIT_QUEUED, CLIState, output_options, pass_state, plain, progress



@click.group()
def batch() -> None:
    """A whole deployment as one reviewable YAML file."""


@batch.command("export")
@click.argument("barclamps", nargs=-1)
@output_options
@pass_state
def batch_export(state: CLIState, barclamps: tuple[str, ...]) -> None:
    """Print proposals (of BARCLAMPS, or all) as a scenario file (YAML; --json for JSON, which apply reads too)."""
    scenario = state.crowbar().batch.export(barclamps)
    if state.output == "json":
        state.emit(scenario)
    else:
        click.echo(dump_scenario(scenario), nl=False)


@batch.command("apply")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check the whole file against the cluster and print the plan; "
                                               "write nothing.")
@output_options
@pass_state
def batch_apply(state: CLIState, file: Any, dry_run: bool) -> int:
    """Create or update the file's proposals, then commit them in dependency order."""
    source = inputs.source_name(file)
    scenario = parse_scenario(inputs.decode(inputs.read_bytes(file), source), source=source)
    crowbar = state.crowbar()
    if dry_run:
        steps = crowbar.batch.plan(scenario)

        def plan_table() -> Table | str:
            if not steps:
                return "the file holds no proposals: nothing to do"
            grid = Table(box=None, header_style="bold")
            for column in ("PROPOSAL", "SAVE", "COMMIT", "MACHINES"):
                grid.add_column(column)
            for step in steps:
                grid.add_row(plain(step["proposal"]), step["save"], "yes" if step["commit"] else "no",
                             str(len(step["machines"])))
            return grid

        state.emit({"plan": steps}, plan_table)
        return 0
    machines = sum(len(m) for p in scenario.proposals if p.commit
                   for m in (p.deployment.elements or {}).values())
    with progress(state, machines, "committing") as advance:
        report = crowbar.batch.apply(scenario, progress=advance)

    def table() -> Table:
        grid = Table(box=None, header_style="bold")
        for column in ("PROPOSAL", "SAVED", "COMMIT", "WHY"):
            grid.add_column(column)
        for ref, action in report.saved.items():
            result = report.commits.get(ref)
            grid.add_row(plain(ref), plain(action), plain(result.status) if result else "-",
                         plain("; ".join(result.reasons)) if result else "")
        return grid

    state.emit(report.as_dict(), table)
    return EXIT_QUEUED if report.queued else 0


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@output_options
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print a shell completion script: eval "$(crowbar completion bash)".

    It completes commands and options, and machine, proposal and setting names
    read from the server (nothing when the server cannot be reached quickly).
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    completer = get_completion_class(shell)
    assert completer is not None
    script = completer(root, {}, "crowbar", "_CROWBAR_COMPLETE").source()
    state = ctx.ensure_object(CLIState)
    if state.machine_readable:
        state.emit({"shell": shell, "script": script})
    else:
        click.echo(script)
