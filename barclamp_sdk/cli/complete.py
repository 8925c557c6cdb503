"""Shell completion of names read from the server: machines, proposals, settings.

Each callback builds its own client from the options already typed (``--profile``,
``--server-url`` ...) with short timeouts and no retries, and completes nothing
when the server cannot be reached: a completion never hangs a shell or prints
an error.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

import click
from click.shell_completion import CompletionItem

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import RetryPolicy
from barclamp_sdk.cli.context import CLIState
from barclamp_sdk.model.keys import setting_keys

#: At most this long (seconds) to connect, and to read one answer, while completing.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 3.0

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _state(ctx: click.Context) -> CLIState:
    """A CLIState from the root options typed so far (completion runs no command callbacks)."""
    state = CLIState()
    for name, value in ctx.find_root().params.items():
        if hasattr(state, name) and value is not None:
            setattr(state, name, value)
    config = dataclasses.replace(state.chef_config(), connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                                 retry=RetryPolicy(attempts=1, total_timeout=READ_TIMEOUT))
    state._client = ChefClient(config)
    return state


def _items(names: Iterable[str], incomplete: str, suffix: str = "") -> list[CompletionItem]:
    return [CompletionItem(f"{n}{suffix}") for n in sorted(set(names)) if n.startswith(incomplete)]


def _quietly(read: Callable[[click.Context], Iterable[str]], incomplete: str, suffix: str = "",
             ctx: click.Context | None = None) -> list[CompletionItem]:
    logging.disable(logging.CRITICAL)  # no warning lines in the middle of the shell's prompt
    try:
        assert ctx is not None
        return _items(read(ctx), incomplete, suffix)
    except Exception:  # noqa: BLE001 - no server, no configuration, anything: complete nothing
        return []
    finally:
        logging.disable(logging.NOTSET)


def machine_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Complete the names of machines (their crowbar roles on the server)."""
    return _quietly(lambda c: _state(c).crowbar().machines.cluster().names(), incomplete, ctx=ctx)


def node_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Complete the names of Chef nodes (machines or not yet)."""
    return _quietly(lambda c: _state(c).client().nodes.list(), incomplete, ctx=ctx)


def proposal_names(barclamp: str) -> Completer:
    """Complete the names of ``barclamp``'s proposals."""
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return _quietly(lambda c: [p["name"] for p in _state(c).crowbar().proposals.list(barclamp)],
                        incomplete, ctx=ctx)
    return complete


def setting_names(barclamp: Any, *, assign: bool) -> Completer:
    """Complete ``barclamp``'s setting keys (``KEY=`` for ``--set`` when ``assign``)."""
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        if assign and "=" in incomplete:
            return []  # a value: nothing to offer
        return _quietly(lambda c: setting_keys(barclamp), incomplete, "=" if assign else "", ctx=ctx)
    return complete
