"""What every CLI command shares: settings, the lazily built API, output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import yaml
from rich.console import Console, RenderableType

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import ChefConfig

FORMATS = ("table", "json", "yaml")


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

            self._crowbar = Crowbar(self.client())
        return self._crowbar

    # -- output ---------------------------------------------------------------

    @property
    def console(self) -> Console:
        return Console(soft_wrap=False, highlight=False)

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

    def note(self, message: str) -> None:
        """A human message on stderr (never mixed into JSON on stdout)."""
        if not self.machine_readable or sys.stderr.isatty():
            self.err_console.print(message)


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


pass_state = click.make_pass_decorator(CLIState, ensure=True)


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
