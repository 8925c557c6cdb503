"""``crowbar secrets``: audit and rotate the encrypted data bag secret."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from barclamp_sdk.chef import encrypted_data_bag as edb
from barclamp_sdk.cli.context import CLIState, output_options, pass_state
from barclamp_sdk.errors import ConfigurationError, CrowbarError
from barclamp_sdk.model.secrets import load_secret


@click.group()
def secrets() -> None:
    """Encrypted secrets (Chef encrypted data bag items of crowbar_secrets)."""


@secrets.command("check")
@output_options
@pass_state
def secrets_check(state: CLIState) -> int:
    """Try every stored secret; show its format and why one cannot be read (exit 1)."""
    store = state.crowbar().secrets
    rows: list[dict[str, Any]] = []
    for item_id in store.items():
        for key, value in store.chef.data_bags.get_item(store.bag, item_id).items():
            if key == "id":
                continue
            try:
                store.get(store.ref(item_id, key))
                problem = ""
            except ConfigurationError:
                raise
            except CrowbarError as exc:
                problem = str(exc).split(" cannot be read: ", 1)[-1]
            rows.append({"item": item_id, "key": key, "format": edb.format_version(value),
                         "readable": not problem, "problem": problem})

    def table() -> Table:
        grid = Table(box=None, header_style="bold")
        for column in ("ITEM", "KEY", "FORMAT", "STATUS"):
            grid.add_column(column)
        for row in rows:
            grid.add_row(row["item"], row["key"], str(row["format"]), escape(row["problem"] or "ok"))
        return grid

    state.emit(rows, table)
    return 0 if all(row["readable"] for row in rows) else 1


@secrets.command("rotate")
@click.argument("new_secret_file", type=click.Path(dir_okay=False))
@output_options
@pass_state
def secrets_rotate(state: CLIState, new_secret_file: str) -> None:
    """Re-encrypt every secret under NEW_SECRET_FILE as format 3; run again to resume."""
    report = state.crowbar().secrets.rotate(load_secret(new_secret_file))
    state.emit(report, lambda: (f"rotated {report['rotated']} items, {report['already_rotated']} already "
                                f"rotated; now point CHEF_ENCRYPTED_DATA_BAG_SECRET and the nodes' "
                                f"encrypted_data_bag_secret at {new_secret_file}"))
