"""The README's main job: a whole deployment on a local Chef server.

A simulated fleet of mixed machines (BMCs served by real ipmi_sim and
sushy-tools peers) is discovered and pauses; proposals for ceph, swift, eqlx,
nova (with Ceph RBD volumes) and bios are made from the inventory, reviewed
and committed in dependency order; the machines boot to ready, their BIOS set
on the way, and the queued proposals apply as their dependencies land. The
Chef server and the BMC peers are left running to explore.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from barclamp_sdk.api import Crowbar
from barclamp_sdk.model.jsondoc import Change
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.testing.bmcpeers import BmcLab
from barclamp_sdk.testing.faultproxy import FaultProxy
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.production import ProductionPersonality

MIX = (("compute", 4, True), ("storage", 6, 2), ("vm", 2, False))
BMC_USER, BMC_PASSWORD = "root", "calvin"
PROPOSALS = ("bios", "ceph", "swift", "eqlx", "nova")


def _say(console: Console, title: str) -> None:
    console.print()
    console.print(Rule(f"[bold]{title}[/bold]", align="left"))


def _machine_table(crowbar: Crowbar, hardware: dict[str, str], *, final: bool = False) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["MACHINE", "HARDWARE", "STATE", "ROLES" if final else "BMC REPORTED"]
    if final:
        columns += ["BIOS", "CHEF ADMINS LOOK AT"]
    for column in columns:
        table.add_column(column)
    inventory = crowbar.machines.inventory()
    for record in crowbar.machines.list():
        machine = inventory.get(record.name)
        row = [record.name, hardware.get(record.name, ""), record.state]
        if final:
            bios = record.hardware.get("bios_set", "-") if record.hardware.get("bios") else "-"
            row += [", ".join(record.elements) or "-", bios, f"crowbar raw GET /roles/{node_role_name(record.name)}"]
        else:
            row.append(machine.bmc.address + f":{machine.bmc.ipmi_port}" if machine and machine.bmc else "-")
        table.add_row(*row)
    return table


def run_demo(directory: Path, console: Console, *, memory: bool = False, production: bool = False) -> int:
    """Run the whole job; leave the server and BMC peers running.

    ``production``: talk to the server through a production personality
    (organization URL, 1 s search lag, a search window of 10, erchef's limits),
    as the tests prove the job on a production-shaped server.
    """
    started = time.monotonic()
    server = LocalChefServer(directory, memory=memory)
    if server.status() is not None or (directory / "peers.json").exists():
        console.print(f"[dim]stopping the previous demo in {directory}[/dim]")
        server.stop()
    server.memory = memory
    server.erase()  # every demo starts from an empty server

    _say(console, "1. A real Chef server, and BMCs")
    server.start(detach=True)
    proxy = None
    if production:
        personality = ProductionPersonality(keys={"admin": server.key_path}, lag=1.0, window=10)
        proxy = FaultProxy(server.url, production=personality).start()
        chef = server.client(server_url=proxy.url + personality.prefix)
        console.print(f"[dim]through a production personality at {proxy.url + personality.prefix}[/dim]")
    else:
        chef = server.client()
    try:
        return _run(directory, console, server, chef, started, memory=memory)
    finally:
        if proxy is not None:
            proxy.stop()


def _run(directory: Path, console: Console, server: LocalChefServer, chef: ChefClient, started: float, *,
         memory: bool) -> int:
    crowbar = Crowbar(chef)
    fleet = Fleet(chef, crowbar=crowbar)
    plan = []
    for profile, count, bmcs in MIX:
        with_bmc = count if bmcs is True else (bmcs or 0)
        plan += [(profile, index < with_bmc) for index in range(count)]
    names = [f"d52-54-00-00-00-{i + 1:02x}.example.com" for i in range(len(plan))]
    lab = BmcLab(directory / "bmcs", [n for n, (_, bmc) in zip(names, plan) if bmc],
                 username=BMC_USER, password=BMC_PASSWORD, detach=True).start()
    server.register_peers(lab.pids())
    store = "in memory" if memory else "on PostgreSQL"
    console.print(f"goiardi (Chef 11 API, {store}) at {server.url}; {len(lab.names)} BMCs: ipmi_sim for power and boot, "
                  "a sushy-tools Redfish emulator for BIOS settings")

    _say(console, "2. Machines appear and pause after discovery")
    hardware = {}
    for profile in ("compute", "storage", "vm"):
        batch = [n for n, (p, _) in zip(names, plan) if p == profile]
        fleet.add(len(batch), profile, names=batch,
                  wall=lambda n, i: lab.wall(n) if n in lab.names else {})
        hardware.update({n: profile for n in batch})
    fleet.boot(names)
    console.print(_machine_table(crowbar, hardware))
    console.print(f"{len(names)} machines discovered; they wait at [bold]discovered[/bold] until allocated, "
                  "so their purpose (and BIOS) can be decided first.")
    for name in lab.names:  # the operator checked these addresses against the BMC network's records
        crowbar.machines.bmc.confirm(name, by="demo operator")
    console.print(f"the operator confirms the {len(lab.names)} BMC addresses the nodes report "
                  "(`crowbar machines bmc confirm NAME`, Redfish certificates pinned): credentials go only there")

    _say(console, "3. Proposals from the inventory")
    crowbar.proposals.create("bios", "default", settings={"bmc_username": BMC_USER, "bmc_password": BMC_PASSWORD})
    ceph = crowbar.proposals.create("ceph", "default")
    console.print("review: ceph wants every storage server; give half of them to swift")
    keep = ceph.elements["ceph-osd"][:3]
    before = ceph.revision
    crowbar.proposals.set("ceph", "default", {
        "elements.ceph-osd": ",".join(keep),
        "osd_devices": json.dumps({n: d for n, d in ceph.attributes["osd_devices"].items() if n in keep})})
    console.print(f"$ crowbar ceph proposal diff default {before} {before + 1}")
    for line in _change_lines(crowbar.proposals.diff("ceph", "default", before, before + 1).changes):
        console.print(line, soft_wrap=True)
    crowbar.proposals.create("swift", "default")
    crowbar.proposals.create("eqlx", "default", settings={"san_password": "grp-S3cret", "san_ip": "10.20.0.5"})
    crowbar.proposals.create("nova", "default", settings={"volume.volume_type": "rbd"})
    summary = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("PROPOSAL", "ELEMENTS", "WHY"):
        summary.add_column(column)
    for barclamp in PROPOSALS:
        proposal = crowbar.proposals.get(barclamp, "default")
        elements = ", ".join(f"{e} {len(m)}" for e, m in proposal.elements.items() if m)
        why = proposal.notes[0] if proposal.notes else ""
        if proposal.revision > 1:  # the notes describe the first revision: say what the review changed
            why = f"edited in review ({crowbar.proposals.history(barclamp, 'default')[-1].get('change')})"
        summary.add_row(f"{barclamp}/default r{proposal.revision}", escape(elements), escape(why))
    console.print(summary)
    console.print("secrets (BMC, SAN, ceph keys, swift hash) went to the encrypted crowbar_secrets data bag; "
                  "proposals and roles hold references only")

    _say(console, "4. Commit in dependency order")
    for barclamp in PROPOSALS:
        result = crowbar.proposals.commit(barclamp, "default")
        more = f" (and {len(result.reasons) - 1} more)" if len(result.reasons) > 1 else ""
        reasons = f": {escape(textwrap.shorten(result.reasons[0], 90, placeholder=' ...'))}{more}" if result.reasons else ""
        console.print(f"{barclamp}/default: [bold]{result.status}[/bold]{reasons}")
    console.print("nova waits for ceph (its RBD volumes) and everything waits for machines to be ready:")
    console.print(f"$ crowbar queue  [dim]({len(crowbar.queue.items())} proposals waiting)[/dim]")

    _say(console, "5. Allocate; machines boot, BIOS is set, queued proposals apply")
    crowbar.machines.allocate(names)
    fleet.boot(names)
    states = {r.name: r.state for r in crowbar.machines.list()}
    bios = [r for r in crowbar.machines.list() if r.hardware.get("bios")]
    console.print(f"{sum(1 for s in states.values() if s == 'ready')} of {len(names)} machines ready; "
                  f"BIOS set through the BMC of {len(bios)} "
                  f"({', '.join(sorted({r.hardware.get('bios_set', '') for r in bios}))} sets); "
                  f"the {len(names) - len(bios)} without a known BMC were skipped")
    for barclamp in PROPOSALS:
        status = crowbar.proposals.status(barclamp, "default")
        console.print(f"{barclamp}/default: [bold]{status.status}[/bold] ({status.detail})")
    waiting = crowbar.queue.items()
    if waiting:
        console.print(f"[red]still queued: {', '.join(i['barclamp'] for i in waiting)}[/red]")

    _say(console, "6. The cluster")
    console.print(_machine_table(crowbar, hardware, final=True))
    console.print(f"done in {time.monotonic() - started:.0f}s. The Chef server and the BMCs keep running:")
    activate = _activate_line()
    if activate:
        console.print(f"  {activate}", soft_wrap=True)
    console.print(f'  eval "$(crowbar local env --dir {directory})"', soft_wrap=True)
    console.print("  crowbar machines list; crowbar nova proposal show default; crowbar queue", soft_wrap=True)
    console.print(f"  crowbar roles show {names[0]}; crowbar bios apply {lab.names[0]}", soft_wrap=True)
    console.print(f"Stop everything: crowbar local stop --dir {directory}", soft_wrap=True)
    return 1 if waiting or any(s != "ready" for s in states.values()) else 0


def _activate_line() -> str | None:
    """How to put this ``crowbar`` on PATH, when it is not there already."""
    here = Path(sys.executable).parent
    found = shutil.which("crowbar")
    if found and Path(found).resolve().parent == here.resolve():
        return None
    activate = here / "activate"
    return f". {activate}" if activate.exists() else f"export PATH={here}:$PATH"


def _change_lines(changes: list[Change]) -> list[str]:
    """A diff as a person reads it: per setting, what was removed and added."""
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    lines = []
    for change in changes:
        if change.kind in ("added", "removed"):  # a key of a map: group under the map
            removed, added = grouped.setdefault(".".join(change.keys[:-1]), ([], []))
            (added if change.kind == "added" else removed).append(change.keys[-1])
        elif isinstance(change.old, list) and isinstance(change.new, list):
            removed, added = grouped.setdefault(change.path, ([], []))
            removed += [str(v) for v in change.old if v not in change.new]
            added += [str(v) for v in change.new if v not in change.old]
        else:
            lines.append(f"  {escape(change.path)}: [red]{escape(str(change.old))}[/red] -> "
                         f"[green]{escape(str(change.new))}[/green]")
    for path, (removed, added) in grouped.items():
        parts = ([f"[red]- {escape(', '.join(removed))}[/red]"] if removed else []) + \
            ([f"[green]+ {escape(', '.join(added))}[/green]"] if added else [])
        lines.append(f"  {escape(path)}: {' '.join(parts)}")
    return lines
