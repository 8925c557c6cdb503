"""``crowbar machines``, ``crowbar roles``, ``crowbar queue``, ``crowbar barclamps``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from barclamp_sdk.cli.bmc import bmc, bmc_rows
from barclamp_sdk.cli.complete import machine_names, node_names
from barclamp_sdk.cli.context import CLIState, output_options, pass_state, plain, progress
from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.runlist import expand
from barclamp_sdk.model.states import STATES


def machine_table(records: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "STATE", "ALLOCATED", "PRODUCT", "MEMORY", "DISKS", "ELEMENTS", "PENDING"):
        table.add_column(column)
    for record in records:
        state = record["state"]
        style = {"ready": "green", "problem": "red", "discovered": "yellow"}.get(state, "")
        hardware = record.get("hardware") or {}
        product = hardware.get("product") or "-"
        if hardware.get("profile"):
            product = f"{product} ({hardware['profile']})"
        memory = f"{hardware['memory_bytes'] / 1024**3:.0f} GiB" if hardware.get("memory_bytes") else "-"
        disks = f"{hardware['disks']} ({hardware.get('data_disks', 0)} data)" if "disks" in hardware else "-"
        table.add_row(plain(record["name"]), f"[{style}]{plain(state)}[/{style}]" if style else plain(state),
                      "yes" if record["allocated"] else "no", plain(product), memory, disks,
                      plain(", ".join(record["elements"]) or "-"),
                      plain(", ".join(k.replace("-", "/", 1) for k in record["pending"]) or "-"))
    return table


@click.group()
def machines() -> None:
    """Discover, allocate and follow machines."""


@machines.command("list")
@click.option("--state", "in_state", type=click.Choice(STATES), help="Only machines in STATE.")
@click.option("--element", metavar="ROLE", help="Only machines holding this element (e.g. ceph-osd).")
@click.option("--hardware", metavar="PROFILE|PRODUCT",
              help="Only this hardware profile (compute, storage, vm ...) or product (e.g. R640; part of "
                   "manufacturer and product, case ignored).")
@click.option("--min-disks", type=click.IntRange(0), metavar="N",
              help="Only machines with at least N data disks (not the OS disk, removable or in use).")
@click.option("--allocated/--unallocated", default=None, help="Only allocated (or only waiting) machines.")
@output_options
@pass_state
def machines_list(state: CLIState, in_state: str | None, **criteria: Any) -> None:
    """Machines with their state, hardware and elements (every filter given must hold)."""
    criteria["state"] = in_state
    records = state.crowbar().machines.listing(**criteria)
    filtered = any(v is not None for v in criteria.values())
    state.emit(records, lambda: machine_table(records) if records else
               "no machine matches" if filtered else
               "no machines yet: run chef-client on some, then `crowbar machines discover`")


@machines.command("show")
@click.argument("name", shell_complete=machine_names)
@output_options
@pass_state
def machines_show(state: CLIState, name: str) -> None:
    """One machine: facts, state, roles, claimed disks."""
    shown = state.crowbar().machines.show(name)

    def table() -> Table:
        grid = Table.grid(padding=(0, 2))
        facts = shown.get("facts") or {}
        rows = [
            ("state", shown["state"] + (" (allocated)" if shown["allocated"] else " (not allocated)")),
            ("role", shown["role"]),
            ("run list", ", ".join(shown["run_list"]) or "-"),
            ("hardware", f"{facts.get('manufacturer', '?')} {facts.get('product', '')}".strip()),
            ("cpus", str(facts.get("cpu_count", "?"))),
            ("memory", f"{(facts.get('memory_bytes') or 0) / 1024**3:.0f} GiB"),
            ("disks", ", ".join(f"{d['name']} {d['size_bytes'] / 1000**3:.0f}G"
                                + (" (os)" if d.get("os_disk") else "") for d in facts.get("disks", [])) or "-"),
            ("claimed", ", ".join(f"{d}: {o}" for d, o in shown["claimed_disks"].items()) or "-"),
            ("pending", ", ".join(shown["pending"]) or "-"),
        ]
        rows = [(key, plain(str(value))) for key, value in rows]  # facts come from the node: no markup
        rows += bmc_rows(shown["bmc"])  # confirmed (used) and reported (shown only), escaped
        if shown["drifted"]:
            rows.append(("drift", "[red]its role was edited by hand[/red]"))
        for problem in facts.get("fact_problems", []):
            rows.append(("odd fact", f"[yellow]{plain(problem)}[/yellow]"))
        for key, value in rows:
            grid.add_row(f"[bold]{key}[/bold]", value)
        return grid

    state.emit(shown, table)


machines.add_command(bmc)


@machines.command("allocate")
@click.argument("names", nargs=-1, shell_complete=machine_names)
@click.option("--all", "every", is_flag=True, help="Every machine waiting for allocation.")
@output_options
@pass_state
def machines_allocate(state: CLIState, names: tuple[str, ...], every: bool) -> None:
    """Let paused machines go on to install (NAMES, or --all)."""
    if bool(names) == every:
        raise click.UsageError("name the machines to allocate, or give --all (not both)")
    api = state.crowbar().machines
    wanted = api.unallocated() if every else list(names)
    with progress(state, len(wanted), "allocating") as advance:
        changed = api.allocate(wanted, progress=advance)
    state.emit({"allocated": changed},
               lambda: f"allocated {len(changed)} machine(s)" + (
                   f"; {len(wanted) - len(changed)} already were" if len(changed) < len(wanted) else ""))


@machines.command("transition")
@click.argument("name", shell_complete=machine_names)
@click.argument("new_state", metavar="STATE", type=click.Choice(STATES))
@output_options
@pass_state
def machines_transition(state: CLIState, name: str, new_state: str) -> None:
    """Record that a machine entered STATE (what boot scripts call)."""
    record = state.crowbar().machines.transition(name, new_state, operator=True)
    state.emit(record.as_dict(), lambda: f"{name}: {record.state}")


@machines.command("discover")
@click.argument("names", nargs=-1, shell_complete=node_names)
@output_options
@pass_state
def machines_discover(state: CLIState, names: tuple[str, ...]) -> int:
    """Make Chef nodes (all, or NAMES) Crowbar machines (nodes that cannot be are skipped, warned)."""
    skipped: dict[str, str] = {}
    found = state.crowbar().machines.discover(names or None, skipped=skipped)
    for name, reason in skipped.items():
        click.echo(f"warning: node {name!r} is not discovered: {reason}", err=True)
    state.emit({"discovered": found, "skipped": skipped},
               lambda: f"discovered {len(found)} new machine(s)"
               + (f"; skipped {len(skipped)} node(s) (see the warnings)" if skipped else ""))
    if names and skipped:
        raise ValidationError(f"not discovered: {', '.join(map(repr, sorted(skipped)))} (see the warnings above)")
    return 0



@machines.command("check")
@click.argument("names", nargs=-1, shell_complete=machine_names)
@output_options
@pass_state
def machines_check(state: CLIState, names: tuple[str, ...]) -> None:
    """Check nodes' run lists hold role[crowbar-<node>]; restore it where lost."""
    repaired = state.crowbar().machines.check_run_lists(names or None)
    state.emit({"repaired": repaired},
               lambda: "every node's run list holds its crowbar role" if not repaired else
               f"restored role[crowbar-...] in the run list of {len(repaired)} node(s): " + ", ".join(repaired))

# -- roles ----------------------------------------------------------------------------


@click.group()
def roles() -> None:
    """Inspect the roles barclamp-sdk generates."""


@roles.command("show")
@click.argument("node", shell_complete=machine_names)
@output_options
@pass_state
def roles_show(state: CLIState, node: str) -> None:
    """A machine's crowbar role and its run list, expanded."""
    crowbar = state.crowbar()
    role = crowbar.role(node_role_name(node))
    expansion = expand(crowbar.chef, [f"role[{role['name']}]"], strict=False)
    data = {"role": role, "expanded": {"roles": expansion.roles, "recipes": expansion.recipes,
                                       "missing_roles": expansion.missing}}

    def table() -> str:
        lines = [plain(f"role {role['name']}  (crowbar raw GET /roles/{role['name']})"),
                 plain(f"  run list: {', '.join(role.get('run_list') or []) or '-'}"),
                 plain(f"  expands to roles: {', '.join(expansion.roles)}"),
                 plain(f"  recipes, in order: {', '.join(expansion.recipes) or '-'}")]
        if expansion.missing:
            lines.append(f"  [red]missing roles: {plain(', '.join(expansion.missing))}[/red]")
        return "\n".join(lines)

    state.emit(data, lambda: state.markup(table()))


# -- queue -------------------------------------------------------------------------------


@click.command()
@output_options
@pass_state
def queue(state: CLIState) -> None:
    """What waits to be applied, and why."""
    items = state.crowbar().queue.explain()

    def table() -> Table | str:
        if not items:
            return "the queue is empty"
        grid = Table(box=None, header_style="bold")
        for column in ("PROPOSAL", "REVISION", "QUEUED AT", "WAITING FOR"):
            grid.add_column(column)
        for item in items:
            grid.add_row(plain(f"{item['barclamp']}/{item['inst']}"), plain(item.get("revision", "")),
                         plain(item.get("queued_at", "")), plain("\n".join(map(str, item.get("reasons") or []))))
        return grid

    state.emit(items, table)


# -- barclamps --------------------------------------------------------------------------


@click.group()
def barclamps() -> None:
    """The barclamps installed."""


@barclamps.command("list")
@output_options
@pass_state
def barclamps_list(state: CLIState) -> None:
    """Every installed barclamp, in run order."""
    registry = state.registry()
    items = [b.info() for b in registry.all()]

    def table() -> Table:
        grid = Table(box=None, header_style="bold")
        for column in ("NAME", "ORDER", "ELEMENTS", "DESCRIPTION"):
            grid.add_column(column)
        for item in items:
            grid.add_row(plain(item["name"]), str(item["run_order"]), plain(", ".join(item["elements"])),
                         plain(item["description"]))
        for name, error in registry.load_errors.items():
            grid.add_row(f"[red]{plain(name)}[/red]", "", "", f"[red]failed to load: {plain(error)}[/red]")
        return grid

    state.emit(items, table)


@barclamps.command("install")
@click.argument("names", nargs=-1)
@output_options
@pass_state
def barclamps_install(state: CLIState, names: tuple[str, ...]) -> None:
    """Upload the element roles of barclamps (all by default)."""
    uploaded = state.crowbar().install(*names)
    state.emit({"uploaded": uploaded},
               lambda: f"uploaded {len(uploaded)} role(s)" + (f": {', '.join(uploaded)}" if uploaded else
                                                             " (all were up to date)"))
