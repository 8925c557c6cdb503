"""What every CLI command shares: settings, the lazily built API, output."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click
import yaml
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from barclamp_sdk.model.progress import Phase
from barclamp_sdk.model.registry import BarclampRegistry

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
#: A commit was queued (not an error: it waits for something named in the output).
EXIT_QUEUED = 3
#: A commit in waves stopped: its failure budget was spent (where and why on one line; commit again to resume).
EXIT_STOPPED = 4

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import ChefConfig

FORMATS = ("table", "json", "yaml")


def plain(value: Any) -> str:
    """``value`` as text rich prints literally: ``[red]``, ``[/bold]``, ``[link=...]`` stay text.

    Every string that comes from the server or the user goes through this
    before it reaches a rich table cell or a markup string.
    """
    return escape(str(value))


@dataclass
class CLIState:
    """Options given before the command, and objects built from them."""

    output: str = "table"
    profile: str | None = None
    server_url: str | None = None
    client_name: str | None = None
    client_key: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    debug: bool = False
    _client: ChefClient | None = field(default=None, repr=False)
    _crowbar: Any = field(default=None, repr=False)
    _registry: BarclampRegistry | None = field(default=None, repr=False)

    def registry(self) -> BarclampRegistry:
        """Installed barclamps (entry points and CROWBAR_BARCLAMPS)."""
        if self._registry is None:
            self._registry = shared_registry()
        return self._registry

    def chef_config(self) -> ChefConfig:
        return ChefConfig.load(
            server_url=self.server_url,
            client_name=self.client_name,
            client_key=self.client_key,
            profile=self.profile,
            ca_file=self.ca_file,
            ssl_verify=False if self.insecure else None,
        )

    def client(self) -> ChefClient:
        """The Chef client (transport), built on first use."""
        if self._client is None:
            self._client = ChefClient(self.chef_config())
        return self._client

    def crowbar(self) -> Any:
        """The :class:`barclamp_sdk.Crowbar` facade, built on first use."""
        if self._crowbar is None:
            from barclamp_sdk.api import Crowbar

            self._crowbar = Crowbar(self.client(), barclamps=self.registry())
        return self._crowbar

    # -- output ---------------------------------------------------------------

    @property
    def console(self) -> Console:
        # Piped output is not wrapped at 80 columns: lines stay greppable.
        width = None if sys.stdout.isatty() else 200
        return Console(soft_wrap=False, highlight=False, width=width)

    @property
    def err_console(self) -> Console:
        return Console(stderr=True, highlight=False)

    @property
    def machine_readable(self) -> bool:
        return self.output in ("json", "yaml")

    def emit(self, data: Any, table: Callable[[], RenderableType | str] | None = None) -> None:
        """Print ``data`` as JSON/YAML, or as the human ``table``."""
        if self.output == "json":
            click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
        elif self.output == "yaml":
            click.echo(yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False), nl=False)
        elif table is not None:
            rendered = table()
            if isinstance(rendered, str):
                click.echo(rendered)
            else:
                self.console.print(rendered)
        else:
            click.echo(json.dumps(data, indent=2, default=str))

    def markup(self, text: str) -> Text:
        """Rich markup as text to print."""
        return Text.from_markup(text)

    def diff_text(self, text: str) -> Text:
        """A unified diff, coloured."""
        rendered = Text()
        for line in text.splitlines(keepends=True):
            style = ("green" if line.startswith("+") and not line.startswith("+++") else
                     "red" if line.startswith("-") and not line.startswith("---") else
                     "cyan" if line.startswith("@@") else "")
            rendered.append(line, style=style)
        return rendered

    def note(self, message: str) -> None:
        """A human message on stderr (never mixed into JSON on stdout)."""
        if not self.machine_readable or sys.stderr.isatty():
            self.err_console.print(message)


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


pass_state = click.make_pass_decorator(CLIState, ensure=True)

_REGISTRY: BarclampRegistry | None = None


def shared_registry() -> BarclampRegistry:
    """One registry per process (loading entry points once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = BarclampRegistry()
    return _REGISTRY


@contextlib.contextmanager
def progress(state: CLIState, total: int, description: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for work on many machines; silent when not a terminal."""
    if total < 2 or state.machine_readable or not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=state.err_console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        guard = threading.Lock()

        def advance(count: int) -> None:
            with guard:
                bar.advance(task, count)

        yield advance


@contextlib.contextmanager
def phase_progress(state: CLIState, subject: str) -> Iterator[Callable[[Phase], None] | None]:
    """A line on stderr naming the phase of a long operation (locking, writing n/N, waiting for
    wave k ...), with a bar while it counts. Not on a terminal (a log, a wrapper script), only the
    waits for chef-client runs are said, a line per wave; nothing in JSON/YAML mode."""
    if state.machine_readable:
        yield None
        return
    if not sys.stderr.isatty():
        said: set[str] = set()

        def log(phase: Phase) -> None:
            wave = phase.label.split(":", 1)[0]  # "waiting for wave k of n: m of N machine(s) ..."
            if phase.name == "waiting" and wave not in said:
                said.add(wave)
                state.err_console.print(f"{subject}: {phase.label}", markup=False, highlight=False, soft_wrap=True)

        yield log
        return
    # One short line, redrawn twice a second and on each phase change (no spinner, no pulsing bar:
    # a terminal that is read slowly must not fill up).
    columns = (TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=state.err_console, transient=True, refresh_per_second=2) as bar:
        task = bar.add_task(subject, total=None)
        guard = threading.Lock()

        def show(phase: Phase) -> None:
            with guard:
                bar.update(task, description=f"{subject}: {phase.label}")
                if not phase.done:  # a new phase at once; counts within one as the line is redrawn
                    bar.refresh()

        yield show


def output_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json`` / ``--yaml`` to a command (they may also precede it)."""

    def set_format(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(CLIState).output = param.name or "table"

    command = click.option("--yaml", "yaml", is_flag=True, expose_value=False,
                           callback=set_format, help="Print YAML.")(command)
    command = click.option("--json", "json", is_flag=True, expose_value=False,
                           callback=set_format, help="Print JSON for scripts.")(command)
    return command
