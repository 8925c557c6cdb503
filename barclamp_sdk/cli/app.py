"""The root ``crowbar`` command group and the Chef-level commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from barclamp_sdk import inputs
from barclamp_sdk.cli.context import CLIState, output_options, pass_state, shared_registry
from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.local import LocalChefServer

DEFAULT_LOCAL_DIR = Path(
    os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")
) / "barclamp-sdk" / "local"


class RootGroup(click.Group):
    """The built-in commands plus one group per installed barclamp."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(super().list_commands(ctx)) + shared_registry().names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        registry = shared_registry()
        if name in registry:
            from barclamp_sdk.cli.proposals import make_group

            group = make_group(registry.get(name))
            if name == "network":  # the address book's commands
                from barclamp_sdk.cli.network import extend

                extend(group)
            return group
        return None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            known = ", ".join(shared_registry().names()) or "none installed"
            raise click.UsageError(f"no command or barclamp {name!r} (barclamps: {known}); see `crowbar --help`")
        return super().resolve_command(ctx, args)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--profile", envvar="CHEF_PROFILE", help="Profile of ~/.chef/credentials to use.")
@click.option("--server-url", help="Chef server URL (overrides CHEF_SERVER_URL).")
@click.option("--client-name", help="Chef client name (overrides CHEF_CLIENT_NAME).")
@click.option("--client-key", type=click.Path(dir_okay=False), help="Client key PEM file.")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle for the server's TLS certificate.")
@click.option("--insecure", is_flag=True, help="Do not verify the server's TLS certificate (warned).")
@click.option("--debug", is_flag=True, help="Log requests and show tracebacks.")
@output_options
@click.version_option(package_name="barclamp-sdk", prog_name="crowbar")
@click.pass_context
def root(ctx: click.Context, **options: Any) -> None:
    """Crowbar's barclamp model on any Chef server.

    Configure the server with CHEF_SERVER_URL, CHEF_CLIENT_NAME and
    CHEF_CLIENT_KEY, a ~/.chef/credentials profile, or knife.rb; or start a
    local one with `eval "$(crowbar local start)"`.
    """
    state = ctx.ensure_object(CLIState)
    for name, value in options.items():
        setattr(state, name, value)


# -- crowbar local -----------------------------------------------------------------


@root.group()
def local() -> None:
    """A real local Chef server (goiardi) for trying things out and tests."""


dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False), default=str(DEFAULT_LOCAL_DIR),
    envvar="CROWBAR_LOCAL_DIR", show_default=True, help="Directory for the server's keys and data.",
)


@local.command("start")
@dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: a free one).")
@click.option("--memory", is_flag=True,
              help="goiardi's in-memory store instead of PostgreSQL: quick to start, but unsafe under "
                   "concurrency (lost writes, two winners of one lock) and lost when stopped.")
@click.option("--persist", is_flag=True, help="With --memory: freeze the data to disk every second.")
@output_options
@pass_state
def local_start(state: CLIState, directory: str, port: int | None, memory: bool, persist: bool) -> None:
    """Start goiardi (on a private PostgreSQL) in the background; prints `export` lines for eval."""
    server = LocalChefServer(directory, port=port, memory=memory, persist=persist).start(detach=True)
    _emit_environment(state, server)
    store = ("in memory, frozen to disk" if persist else "in memory") if memory else "in PostgreSQL, kept"
    click.echo(
        f"# Chef server running at {server.url} (data {store}); "
        f"stop it with: crowbar local stop --dir {server.directory}",
        err=True,
    )


@local.command("status")
@dir_option
@output_options
@pass_state
def local_status(state: CLIState, directory: str) -> int:
    """Is the local server running, and where."""
    info = LocalChefServer(directory).status()
    if info is None:
        state.emit({"running": False, "dir": directory},
                   lambda: f"no local Chef server running from {directory}")
        return 1
    data = {"running": True, "dir": directory, **info}
    store = {"postgresql": "PostgreSQL"}.get(info.get("store", "memory"),
                                             "persisted in memory" if info.get("persist") else "in memory")
    state.emit(data, lambda: f"running: {info['url']} (pid {info['pid']}, {store})")
    return 0


@local.command("env")
@dir_option
@output_options
@pass_state
def local_env(state: CLIState, directory: str) -> int:
    """Print `export` lines for the running local server (for eval)."""
    server = LocalChefServer(directory)
    if server.status() is None:
        raise NotFoundError(
            f"no local Chef server running from {directory}; start one with "
            f"`crowbar local start --dir {directory}`"
        )
    _emit_environment(state, server)
    return 0


def _emit_environment(state: CLIState, server: LocalChefServer) -> None:
    """``export`` lines for eval; with --json/--yaml the URL, directory and variables."""
    if state.machine_readable:
        state.emit({"url": server.url, "dir": str(server.directory), "environment": server.environment()})
    else:
        click.echo(server.export_lines(), nl=False)


@local.command("stop")
@dir_option
@output_options
@pass_state
def local_stop(state: CLIState, directory: str) -> int:
    """Stop the local server."""
    stopped = LocalChefServer(directory).stop()
    if state.machine_readable:
        state.emit({"stopped": stopped, "dir": directory})
    elif stopped:
        click.echo(f"stopped the Chef server in {directory}", err=True)
    else:
        click.echo(f"no local Chef server was running from {directory}", err=True)
    return 0


# -- crowbar raw -----------------------------------------------------------------------


RAW_METHODS = ("GET", "PUT", "POST", "DELETE")


@root.command()
@click.argument("request", nargs=-1, required=True, metavar="[METHOD] PATH")
@click.option("--data", "data_file", type=click.File("rb"), help="Request body: a JSON file, or - for stdin.")
@output_options
@pass_state
def raw(state: CLIState, request: tuple[str, ...], data_file: Any) -> None:
    """Send one signed request and print the answer (like `knife raw`; METHOD defaults to GET).

    \b
    Examples:
      crowbar raw /nodes
      crowbar raw GET /roles/crowbar-d52-54-00_example_com
      crowbar raw PUT /roles/web --data role.json
    """
    if len(request) > 2:
        raise click.UsageError(f"give [METHOD] PATH, not {len(request)} arguments")
    method, path = request if len(request) == 2 else ("GET", request[0])
    if method.upper() not in RAW_METHODS:
        raise click.UsageError(f"METHOD must be one of {', '.join(RAW_METHODS)} (got {method!r})")
    if not path.startswith("/"):
        raise ValidationError(f"PATH must start with / (got {path!r}), e.g. /nodes")
    body = None
    if data_file is not None:
        body = inputs.read_json(data_file, f"--data {inputs.source_name(data_file)}")
    elif method.upper() in ("PUT", "POST"):
        raise ValidationError(f"{method.upper()} needs a body: --data FILE (or - for stdin)")
    path, _, query = path.partition("?")
    params = dict(p.split("=", 1) if "=" in p else (p, "") for p in query.split("&") if p)
    result = state.client().request(method.upper(), path, body, params=params or None)
    if state.output == "table":
        state.output = "json"
    state.emit(result)



# -- crowbar demo ------------------------------------------------------------------


@root.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".demo",
              show_default=True, help="Directory for the demo's Chef server.")
@click.option("--memory", is_flag=True, help="goiardi's in-memory store instead of PostgreSQL (unsafe "
                                             "under concurrency).")
@click.option("--production", is_flag=True, help="Through a production personality (organization URL, "
                                                 "search lag and window, erchef's limits), as the tests run it.")
@output_options
@pass_state
def demo(state: CLIState, directory: str, memory: bool, production: bool) -> int:
    """Run the end-to-end demo on a local Chef server (left running).

    With --json the narration goes to stderr and stdout gets where the server is and the outcome.
    """
    from barclamp_sdk.cli.demo import run_demo

    path = Path(directory).resolve()
    console = state.err_console if state.machine_readable else state.console
    status = run_demo(path, console, memory=memory, production=production)
    if state.machine_readable:
        server = LocalChefServer(path)
        state.emit({"dir": str(path), "exit_code": status,
                    "environment": server.environment() if server.status() is not None else {}})
    return status


def _register() -> None:
    from barclamp_sdk.cli import audit, batch, locks, machines, secrets, sim

    for command in (machines.machines, machines.roles, machines.queue, machines.barclamps, sim.sim,
                    batch.batch, batch.completion, secrets.secrets, locks.locks, audit.audit):
        root.add_command(command)


_register()
