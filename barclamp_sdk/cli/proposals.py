"""``crowbar BARCLAMP proposal ...``: one command group per installed barclamp."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml
from rich.table import Table

from barclamp_sdk import Action, Barclamp, CommitResult, inputs
from barclamp_sdk.cli.complete import machine_names, proposal_names, setting_names
from barclamp_sdk.cli.context import (
    EXIT_QUEUED,
    EXIT_STOPPED,
    CLIState,
    output_options,
    pass_state,
    phase_progress,
    plain,
)
from barclamp_sdk.errors import CrowbarError, ValidationError
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.secrets import MASK, is_reference



def masked(value: Any) -> Any:
    """For people: secret references shown masked (JSON/YAML keep the reference)."""
    if is_reference(value):
        return f"{MASK} ({value['data_bag']}/{value['item']}:{value['key']})"
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def flat(settings: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Settings as (dotted key, value) pairs."""
    if isinstance(settings, dict) and settings and not is_reference(settings):
        pairs: list[tuple[str, Any]] = []
        for key, value in settings.items():
            pairs += flat(value, f"{prefix}{key}.")
        return pairs
    return [(prefix.rstrip("."), settings)]


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        values[key.strip()] = value
    return values


def proposal_view(proposal: Proposal, status: str | None = None) -> str:
    """A proposal for people (rich markup; every value escaped)."""
    lines = [f"[bold]{plain(proposal.barclamp)}/{plain(proposal.name)}[/bold]  revision {proposal.revision}"
             + (f"  {plain(f'[{status}]')}" if status else "")]
    if proposal.description:
        lines.append(plain(proposal.description))
    lines.append("")
    lines.append("[bold]elements[/bold]")
    for element in proposal.definition.elements:
        members = proposal.elements.get(element.name, [])
        lines.append(plain(f"  {element.name} ({len(members)}): {', '.join(members) or '-'}"))
    lines.append("")
    lines.append("[bold]settings[/bold]")
    for key, value in flat(masked(proposal.attributes)):
        lines.append(plain(f"  {key} = {json.dumps(value) if not isinstance(value, str) else value}"))
    if proposal.notes:
        lines.append("")
        lines.append("[bold]notes[/bold]")
        lines += [plain(f"  - {note}") for note in proposal.notes]
    return "\n".join(lines)


def commit_view(result: CommitResult) -> str:
    """A commit's outcome for people (rich markup; every value escaped)."""
    ref = plain(str(result.proposal))
    if result.status == "queued":
        return "\n".join([f"[yellow]{ref} r{result.revision} is queued[/yellow] because:",
                          *(plain(f"  - {reason}") for reason in result.reasons),
                          "it is applied automatically once nothing blocks it (see `crowbar queue`)"])
    if result.status == "planned":
        lines = [f"dry run of {ref} r{result.revision}: {len(result.changes)} role(s) would change"]
        for reason in result.reasons:
            lines.append(f"  [yellow]would be queued: {plain(reason)}[/yellow]")
        for change in result.changes:
            lines.append(plain(f"  {change.action} {change.role}"))
            if change.added:
                lines.append(plain(f"      + {', '.join(change.added)}"))
            if change.removed:
                lines.append(plain(f"      - {', '.join(change.removed)}"))
            if change.node is not None:
                lines.append(plain(f"      run list: {', '.join(change.run_list_after) or '-'}"))
            lines += [plain(f"      {c}") for c in change.changes[:10]]
        return "\n".join(lines)
    if result.status == "unchanged":
        return f"{ref} r{result.revision} is already applied: nothing to do"
    if result.status == "stopped":
        return f"[red]stopped:[/red] {plain(result.reasons[0] if result.reasons else 'the rollout stopped')}"
    extra = f"; repaired the run list of {len(result.repaired_nodes)} node(s)" if result.repaired_nodes else ""
    return f"[green]applied {ref} r{result.revision}[/green]: {result.machines_written} machine role(s) written " \
           f"in {result.seconds:.1f}s{extra}"


def status_view(status: Any) -> str:
    """A proposal's status for people, with the waves of its last rollout (plain text)."""
    lines = [f"{status.proposal}: {status.status} ({status.detail})"]
    rollout = status.rollout
    if rollout:
        plan = rollout.get("plan") or {}
        lines.append(f"rollout of r{rollout.get('revision')}: {rollout.get('status')}, waves of {plan.get('wave')}, "
                     f"at most {plan.get('max_failures')} failure(s), {plan.get('timeout')}s per wave")
        for wave in rollout.get("waves") or []:
            failed = wave.get("failed") or {}
            lines.append(f"  wave {wave.get('wave')}: batch {wave.get('batch')}, {wave.get('machines')} machine(s), "
                         f"{wave.get('status')}" + (f", {len(failed)} failed" if failed else ""))
            lines += [f"    {node}: {why}" for node, why in sorted(failed.items())]
    return "\n".join(lines)


def _edit_in_editor(state: CLIState, barclamp: str, name: str) -> None:
    """Crowbar's raw attribute mode: $EDITOR on the document, re-opened on errors."""
    crowbar = state.crowbar()
    proposal = crowbar.proposals.get(barclamp, name)
    base_revision = proposal.revision
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    text = yaml.safe_dump(proposal.to_dict(), sort_keys=False, default_flow_style=False)
    header = (f"# Edit proposal {barclamp}/{name} (revision {base_revision}). Save and quit to apply;\n"
              "# an empty file cancels. Problems are shown and the file reopens, nothing lost.\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{barclamp}-{name}.yaml"
        path.write_text(header + text)
        while True:
            status = _run_editor(editor, path)
            if status != 0:
                raise CrowbarError(f"the editor ({editor}) exited with status {status}; nothing saved")
            content = inputs.decode(inputs.read_bytes(path), str(path))
            body = "\n".join(line for line in content.splitlines() if not line.startswith("#"))
            if not body.strip():
                click.echo("empty file: nothing saved", err=True)
                return
            try:
                document = inputs.load_yaml(body, "the edited document")
                saved = crowbar.proposals.replace(barclamp, name, document, expected_revision=base_revision,
                                                  change="edited in an editor")
            except ValidationError as exc:
                problem = "; ".join(exc.errors) if exc.errors else str(exc)
            except CrowbarError as exc:  # e.g. someone else saved meanwhile: keep the edit
                kept = _keep_edit(barclamp, name, base_revision, content)
                raise type(exc)(f"{exc} (your edit is kept in {kept})") from None
            else:
                if saved.revision == base_revision:
                    click.echo("no changes", err=True)
                else:
                    click.echo(f"saved {barclamp}/{name} revision {saved.revision}", err=True)
                return
            click.echo(f"error: {problem}", err=True)
            if not sys.stdin.isatty() and os.environ.get("CROWBAR_EDIT_RETRY") != "1":
                kept = _keep_edit(barclamp, name, base_revision, content)
                raise ValidationError(f"{problem} (your edit is kept in {kept})")
            if not click.confirm("Reopen the editor to fix it?", default=True, err=True):
                kept = _keep_edit(barclamp, name, base_revision, content)
                raise ValidationError(f"{problem} (your edit is kept in {kept})")
            edited = "".join(line for line in content.splitlines(keepends=True) if not line.startswith("# ERROR: "))
            path.write_text(f"# ERROR: {problem}\n" + edited)


def _run_editor(editor: str, path: Path) -> int:
    """Run ``$VISUAL``/``$EDITOR`` on ``path``; a missing or malformed editor is one clear error."""
    try:
        command = shlex.split(editor)
    except ValueError as exc:
        raise CrowbarError(f"cannot parse the editor command {editor!r} ($VISUAL/$EDITOR): {exc}; "
                           "nothing saved") from None
    if not command:
        raise CrowbarError("the editor command ($VISUAL/$EDITOR) is empty; nothing saved")
    try:
        return subprocess.call([*command, str(path)])
    except OSError as exc:
        raise CrowbarError(f"cannot run the editor {command[0]!r} ($VISUAL/$EDITOR): "
                           f"{exc.strerror or exc}; set EDITOR to an installed editor (nothing saved)") from None


def _keep_edit(barclamp: str, name: str, revision: int, content: str) -> Path:
    """Save an edit that could not be applied where the user can find it."""
    fd, kept = tempfile.mkstemp(prefix=f"crowbar-{barclamp}-{name}-r{revision}-", suffix=".yaml")
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return Path(kept)


def make_group(barclamp: Barclamp) -> click.Group:
    """The command group of one barclamp."""
    bc = barclamp.name

    @click.group(name=bc, help=f"{barclamp.title}: {barclamp.description}".rstrip(": "))
    def group() -> None:
        pass

    @group.group()
    def proposal() -> None:
        """Proposals: create, review, edit, commit."""

    @proposal.command("list")
    @output_options
    @pass_state
    def list_(state: CLIState) -> None:
        """The proposals of this barclamp."""
        items = state.crowbar().proposals.list(bc)

        def table() -> Table | str:
            if not items:
                return f"no {bc} proposals; create one with `crowbar {bc} proposal create default`"
            grid = Table(box=None, header_style="bold")
            for column in ("NAME", "REVISION", "STATUS", "MACHINES", "DESCRIPTION"):
                grid.add_column(column)
            for item in items:
                grid.add_row(plain(item["name"]), plain(item["revision"]), plain(item["status"]),
                             plain(item["machines"]), plain(item["description"]))
            return grid

        state.emit(items, table)

    @proposal.command()
    @click.argument("name")
    @click.option("--description", help="Describe the proposal.")
    @click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
                  shell_complete=setting_names(barclamp, assign=True), help="Set a setting first.")
    @click.option("--empty", is_flag=True, help="Assign no machines (do not read the inventory).")
    @output_options
    @pass_state
    def create(state: CLIState, name: str, description: str | None, pairs: tuple[str, ...], empty: bool) -> None:
        """Create a proposal from the inventory."""
        created = state.crowbar().proposals.create(bc, name, description=description, settings=parse_pairs(pairs),
                                                   from_inventory=not empty)
        state.emit(created.to_dict(), lambda: state.markup(proposal_view(created, "created")))

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.option("--revision", type=int, help="Show an earlier revision.")
    @output_options
    @pass_state
    def show(state: CLIState, name: str, revision: int | None) -> None:
        """Show a proposal (secrets masked)."""
        crowbar = state.crowbar()
        shown = crowbar.proposals.revision(bc, name, revision) if revision else crowbar.proposals.get(bc, name)
        status = crowbar.proposals.status(bc, name).status if not revision else None
        state.emit(shown.to_dict(), lambda: state.markup(proposal_view(shown, status)))

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.option("--file", "file", type=click.File("rb"), help="A whole document (JSON or YAML; - for stdin).")
    @click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
                  shell_complete=setting_names(barclamp, assign=True), help="Set one setting (repeatable).")
    @click.option("--unset", "unset", multiple=True, metavar="KEY", shell_complete=setting_names(barclamp, assign=False), help="Reset a setting to its default.")
    @output_options
    @pass_state
    def edit(state: CLIState, name: str, file: Any, pairs: tuple[str, ...], unset: tuple[str, ...]) -> None:
        """Edit a proposal: --set/--unset keys, --file a document, or $EDITOR."""
        crowbar = state.crowbar()
        if file is not None and (pairs or unset):
            raise click.UsageError("use --file, or --set/--unset, not both")
        if file is not None:
            document = inputs.read_document(file, f"--file {inputs.source_name(file)}")
            saved = crowbar.proposals.replace(bc, name, document, source=f"--file {inputs.source_name(file)}")
        elif pairs or unset:
            saved = crowbar.proposals.set(bc, name, parse_pairs(pairs), unset)
        else:
            _edit_in_editor(state, bc, name)
            return
        state.emit(saved.to_dict(), lambda: f"saved {bc}/{name} revision {saved.revision}")

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.option("--force", is_flag=True, help="Delete it though committed proposals link to it (audited).")
    @output_options
    @pass_state
    def delete(state: CLIState, name: str, force: bool) -> None:
        """Delete a proposal that is not committed (refused while committed proposals link to it)."""
        state.crowbar().proposals.delete(bc, name, force=force)
        state.emit({"deleted": f"{bc}/{name}", "forced": force}, lambda: f"deleted {bc}/{name}")

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.argument("rev", metavar="REV")
    @click.option("--commit", "then_commit", is_flag=True, help="Commit the new revision too.")
    @click.option("--keep-current-secrets", is_flag=True,
                  help="Secrets whose value at REV is gone keep their current value.")
    @output_options
    @pass_state
    def revert(state: CLIState, name: str, rev: str, then_commit: bool, keep_current_secrets: bool) -> int:
        """Save a new revision with the content of REV (3 or r3) and show the diff (commit it with --commit)."""
        text = rev.strip().removeprefix("r")
        if not text.isdigit():
            raise ValidationError(f"REV must be a revision number (like 3 or r3), not {rev!r}; "
                                  f"see `crowbar {bc} proposal history {name}`")
        revision = int(text)
        crowbar = state.crowbar()
        with phase_progress(state, f"reverting {bc}/{name} to r{revision}") as phases:
            result = crowbar.proposals.revert(bc, name, revision, commit=then_commit,
                                              keep_current_secrets=keep_current_secrets, phases=phases)

        def human() -> Any:
            if not result.changed:
                return f"{bc}/{name} r{result.previous_revision} already has the content of r{revision}: nothing saved"
            if result.diff is not None and result.diff.text:
                state.console.print(state.diff_text(result.diff.text))
            kept = (f" (kept the current value of {', '.join(result.kept_secrets)})"
                    if result.kept_secrets else "")
            lines = [f"saved {bc}/{name} r{result.proposal.revision} with the content of r{revision}{kept}"]
            if result.commit is not None:
                lines.append(commit_view(result.commit))
            else:
                lines.append(f"review it, then commit it with `crowbar {bc} proposal commit {name}`")
            return state.markup("\n".join(lines))

        state.emit(result.as_dict(), human)
        return EXIT_QUEUED if result.commit is not None and result.commit.status == "queued" else 0

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.option("--dry-run", is_flag=True, help="Show the role changes; write nothing.")
    @click.option("--force", is_flag=True, help="Overwrite roles edited by hand.")
    @click.option("--wave", type=click.IntRange(min=1), metavar="SIZE",
                  help="Roll out SIZE machines at a time, waiting for their chef-client runs "
                       "(default: the proposal's rollout block, else all at once).")
    @click.option("--max-failures", type=click.IntRange(min=1), metavar="K",
                  help="Stop once K machines failed or timed out (default 1).")
    @click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                  help="How long each wave waits for chef-client runs (default 3600).")
    @output_options
    @pass_state
    def commit(state: CLIState, name: str, dry_run: bool, force: bool, wave: int | None,
               max_failures: int | None, timeout: float | None) -> int:
        """Apply a proposal (exit 3 when it has to wait in the queue, 4 when a rollout in waves stopped)."""
        crowbar = state.crowbar()
        with phase_progress(state, f"committing {bc}/{name}") as phases:
            result = crowbar.proposals.commit(bc, name, dry_run=dry_run, force=force, phases=phases,
                                              wave=wave, max_failures=max_failures, timeout=timeout)
        state.emit(result.as_dict(), lambda: state.markup(commit_view(result)))
        return EXIT_QUEUED if result.status == "queued" else EXIT_STOPPED if result.status == "stopped" else 0

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @output_options
    @pass_state
    def dequeue(state: CLIState, name: str) -> None:
        """Take a proposal out of the queue."""
        state.crowbar().proposals.dequeue(bc, name)
        state.emit({"dequeued": f"{bc}/{name}"}, lambda: f"{bc}/{name} is no longer queued")

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @output_options
    @pass_state
    def status(state: CLIState, name: str) -> None:
        """Where a proposal stands (ready, pending, failed, unready, hold, interrupted)."""
        result = state.crowbar().proposals.status(bc, name)
        state.emit(result.as_dict(), lambda: status_view(result))

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @output_options
    @pass_state
    def history(state: CLIState, name: str) -> None:
        """Every saved revision."""
        entries = state.crowbar().proposals.history(bc, name)

        def table() -> Table:
            grid = Table(box=None, header_style="bold")
            for column in ("REVISION", "SAVED AT", "BY", "CHANGE"):
                grid.add_column(column)
            for entry in entries:
                grid.add_row(plain(entry["revision"]), plain(entry["saved_at"]), plain(entry["saved_by"]),
                             plain(entry["change"]))
            return grid

        state.emit(entries, table)

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.argument("old", type=int, required=False)
    @click.argument("new", type=int, required=False)
    @output_options
    @pass_state
    def diff(state: CLIState, name: str, old: int | None, new: int | None) -> None:
        """Compare revisions OLD and NEW (default: what is applied, and the current one)."""
        result = state.crowbar().proposals.diff(bc, name, old, new)
        state.emit(result.as_dict(), lambda: state.diff_text(result.text) if result.text
                   else f"no differences between {result.old_label} and {result.new_label}")

    @proposal.command()
    @click.argument("name", shell_complete=proposal_names(bc))
    @click.option("--force", is_flag=True, help="Deactivate it though committed proposals link to it (audited).")
    @output_options
    @pass_state
    def deactivate(state: CLIState, name: str, force: bool) -> None:
        """Take a committed proposal off its machines (refused while committed proposals link to it)."""
        with phase_progress(state, f"deactivating {bc}/{name}") as phases:
            result = state.crowbar().proposals.deactivate(bc, name, force=force, phases=phases)
        state.emit(result.as_dict(), lambda: f"deactivated {bc}/{name}: {result.machines_written} machine role(s) written")

    for action in barclamp.actions:
        group.add_command(action_command(action, bc))
    return group


def action_command(action: Action, barclamp: str) -> click.Command:
    """The command of a barclamp's :class:`~barclamp_sdk.Action`: MACHINES..., --proposal, output options."""
    @click.command(action.name, help=action.help)
    @click.argument("machines", nargs=-1, required=True, shell_complete=machine_names)
    @click.option("--proposal", "proposal_name", default="default", show_default=True)
    @output_options
    @pass_state
    def command(state: CLIState, machines: tuple[str, ...], proposal_name: str) -> int:
        with phase_progress(state, f"{barclamp} {action.name}") as phases:
            result = state.crowbar().run_action(barclamp, action.name, proposal_name, list(machines),
                                                phases=phases)

        def table() -> Table:
            grid = Table(box=None, header_style="bold")
            for column in result.columns:
                grid.add_column(column.upper().replace("_", " "))
            for row in result.rows:
                grid.add_row(*(plain(_cell(row.get(column))) for column in result.columns))
            return grid

        state.emit(result.rows, table)
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        if result.error:
            raise CrowbarError(result.error)  # printed by main(): one line, or JSON with --json
        return 0

    return command


def _cell(value: Any) -> str:
    if value in (None, "", [], {}):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
