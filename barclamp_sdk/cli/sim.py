"""``crowbar sim``: a simulated fleet on the Chef server, for demos and trials."""

from __future__ import annotations

import click

from barclamp_sdk.cli.complete import node_names
from barclamp_sdk.cli.context import CLIState, output_options, pass_state, progress
from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.states import LIFECYCLE
from barclamp_sdk.testing.fleet import PROFILES, Fleet


def _fleet(state: CLIState, domain: str = "example.com") -> Fleet:
    return Fleet(state.client(), crowbar=state.crowbar(), domain=domain)


@click.group()
def sim() -> None:
    """Simulated machines: nodes as chef-client makes them, boots, chef-client runs."""


@sim.group()
def nodes() -> None:
    """Simulated nodes."""


@nodes.command("add")
@click.argument("count", type=click.IntRange(1, 100_000))
@click.option("--hardware", type=click.Choice(sorted(PROFILES)), default="compute", show_default=True,
              help="Hardware profile.")
@click.option("--domain", default="example.com", show_default=True)
@output_options
@pass_state
def nodes_add(state: CLIState, count: int, hardware: str, domain: str) -> None:
    """Create COUNT nodes as a first chef-client run would."""
    names = _fleet(state, domain).add(count, hardware)
    state.emit({"added": names}, lambda: f"added {len(names)} {hardware} node(s): {names[0]} ... {names[-1]}"
               if len(names) > 1 else f"added {names[0]}")


@sim.command()
@click.argument("names", nargs=-1, shell_complete=node_names)
@click.option("--all", "everyone", is_flag=True, help="Run on every node (the default when no NAMES are given).")
@click.option("--fail", "failing", multiple=True, metavar="NAME",
              help="This machine's run fails (it reports the failure, as the run handler does); repeatable.")
@output_options
@pass_state
def converge(state: CLIState, names: tuple[str, ...], everyone: bool, failing: tuple[str, ...]) -> None:
    """Run (simulated) chef-client on NAMES, or on every node (--all)."""
    if names and everyone:
        raise click.UsageError("name machines, or give --all, not both")
    fleet = _fleet(state)
    targets = list(names) or state.client().nodes.list()
    unknown = sorted(set(failing) - set(targets))
    if unknown:
        raise click.UsageError(f"--fail names a machine that is not converged here: {', '.join(unknown)}")
    fleet.failing.update({name: "simulated failure (crowbar sim converge --fail)" for name in failing})
    with progress(state, len(targets), "chef-client") as advance:
        for name in targets:
            fleet.converge(name)
            if advance:
                advance(1)
    state.emit({"converged": [n for n in targets if n not in failing], "failed": sorted(failing)},
               lambda: f"converged {len(targets)} node(s)" + (f", {len(failing)} failed" if failing else ""))


@sim.command()
@click.argument("names", nargs=-1, shell_complete=node_names)
@click.option("--all", "everyone", is_flag=True, help="Boot every node.")
@click.option("--until", type=click.Choice(LIFECYCLE), default="ready", show_default=True)
@output_options
@pass_state
def boot(state: CLIState, names: tuple[str, ...], everyone: bool, until: str) -> int:
    """Boot machines as Crowbar's boot scripts do (they pause until allocated)."""
    if not names and not everyone:
        raise click.UsageError("name machines to boot, or give --all")
    targets = list(names) or state.client().nodes.list()
    with progress(state, len(targets), "booting") as advance:
        skipped: dict[str, str] = {}
        states = _fleet(state).boot(targets, until=until, progress=advance, skipped=skipped)
    for name, reason in skipped.items():
        click.echo(f"warning: node {name!r} is not booted: {reason}", err=True)
    paused = [n for n, s in states.items() if s == "discovered" and until != "discovered"]

    def summary() -> str:
        counts: dict[str, int] = {}
        for final in states.values():
            counts[final] = counts.get(final, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if paused:
            text += f"; {len(paused)} wait for allocation (`crowbar machines allocate NAME...` or `--all`)"
        return text

    state.emit(states, summary)
    if names and skipped:
        raise ValidationError(f"not booted: {', '.join(map(repr, sorted(skipped)))} (see the warnings above)")
    return 0
