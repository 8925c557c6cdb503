"""The README's main job, run on a local Chef server (``crowbar demo``)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from barclamp_sdk.local import LocalChefServer


def run_demo(directory: Path, console: Console) -> int:
    """Start a local Chef server, write a role and read it back."""
    server = LocalChefServer(directory)
    if server.status() is not None:
        console.print(f"[dim]stopping the previous demo server in {directory}[/dim]")
        server.stop()
    server.start(detach=True)
    console.print(f"[bold]Chef server[/bold] goiardi running at {server.url}")
    client = server.client()
    role = {
        "name": "crowbar-demo_example_com",
        "description": "Crowbar per-node role for demo.example.com",
        "default_attributes": {"crowbar": {"state": "ready", "allocated": True}},
        "override_attributes": {},
        "run_list": [],
    }
    client.roles.create(role)
    stored = client.roles.get(role["name"])
    console.print(f"wrote and read back role [bold]{role['name']}[/bold]:")
    console.print_json(json.dumps(stored))
    console.print()
    console.print("Explore it (the server keeps running):", soft_wrap=True)
    console.print(f'  eval "$(crowbar local env --dir {directory})"', soft_wrap=True)
    console.print(f"  crowbar raw GET /roles/{role['name']}", soft_wrap=True)
    console.print(f"Stop it:  crowbar local stop --dir {directory}", soft_wrap=True)
    return 0
