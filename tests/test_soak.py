"""A bounded soak: several processes edit, commit, run chef-client and move machines.

Five processes run for ``CROWBAR_SOAK_SECONDS`` (default 90): two editors on
one proposal (different keys), one on another, chef-client runs saving whole
nodes, and machines leaving ready and coming back (so commits queue and
resume). Afterwards an invariant checker looks for lost updates, stuck locks,
a stuck queue and roles that disagree with the proposals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from barclamp_sdk.model.naming import node_role_name
from tests.support import figures
from tests.test_concurrency import ready_machines

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("CROWBAR_SOAK_SECONDS", "90"))
ACTORS = [("editor", "widget", "port"), ("editor", "widget", "nested.label"), ("editor", "gizmo", "size"),
          ("chef-client",), ("transitions",)]


def test_soak_nothing_lost_nothing_stuck(chef_server, crowbar, fleet, chef, tmp_path):
    names = ready_machines(crowbar, fleet, 24)
    for barclamp in ("widget", "gizmo"):
        crowbar.proposals.create(barclamp, "default")
        assert crowbar.proposals.commit(barclamp, "default").status == "applied"
    crowbar.proposals.set("gizmo", "default", {"elements.gizmo-node": ",".join(names[:12])})

    env = {**os.environ, **chef_server.server.environment(), "PYTHONPATH": str(ROOT)}
    deadline = time.time() + SECONDS
    logs = [tmp_path / f"actor-{i}.jsonl" for i in range(len(ACTORS))]
    workers = [subprocess.Popen([sys.executable, "-m", "tests.support.soak_worker", actor[0], str(deadline),
                                 str(log), *actor[1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for actor, log in zip(ACTORS, logs)]
    for worker in workers:
        _, err = worker.communicate(timeout=SECONDS + 300)
        assert worker.returncode == 0, err[-3000:]
    entries = [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]
    actions = Counter(e["action"] for e in entries)
    assert actions["edit"] >= 10 and actions["converge"] >= 50 and actions["transition"] >= 5, actions

    # 1. No lost update: every acknowledged edit is in the history, and the last one of each key is current.
    last: dict[tuple[str, str], dict] = {}
    lost = []
    for entry in (e for e in entries if e["action"] == "edit"):
        revision = crowbar.proposals.revision(entry["barclamp"], "default", entry["revision"])
        if _get(revision.attributes, entry["key"]) != _typed(entry):
            lost.append(entry)
        previous = last.get((entry["barclamp"], entry["key"]))
        if previous is None or entry["revision"] > previous["revision"]:
            last[(entry["barclamp"], entry["key"])] = entry
    lost += [entry for (barclamp, key), entry in last.items()
             if _get(crowbar.proposals.get(barclamp, "default").attributes, key) != _typed(entry)]
    assert lost == []

    # 2. Nothing stuck: no lock is left, every machine is ready, the queue drains.
    assert crowbar.locks.all() == []
    states = {m.name: m.state for m in crowbar.machines.list()}
    assert set(states.values()) == {"ready"}, states
    crowbar.proposals.process_queue()
    assert crowbar.queue.items() == []

    # 3. Roles agree with the proposals: a final commit converges, and then writes nothing.
    for barclamp in ("widget", "gizmo"):
        assert crowbar.proposals.commit(barclamp, "default").status in ("applied", "unchanged")
    before = chef.stats.writes
    for barclamp in ("widget", "gizmo"):
        assert crowbar.proposals.commit(barclamp, "default").status == "unchanged"
    assert chef.stats.writes == before
    widget = crowbar.proposals.get("widget", "default")
    config = chef.roles.get("widget-config-default")["default_attributes"]["widget"]
    assert config["port"] == widget.attributes["port"] and config["nested"] == widget.attributes["nested"]
    gizmo = crowbar.proposals.get("gizmo", "default")
    for name in names:
        role_map = chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]["run_list_map"]
        assert ("gizmo-node" in role_map) == (name in gizmo.elements["gizmo-node"]), name
        # 4. What nodes own survived the server's work, and the server's role is still in the run list.
        node = chef.nodes.get(name)
        assert node["run_list"][0] == f"role[{node_role_name(name)}]"
        assert node["normal"]["crowbar_wall"]["boot_disk"] and node["automatic"]["dmi"]

    for action, count in actions.items():
        figures.record(f"soak_{action}s", count)
    for status, count in Counter(e["status"] for e in entries if e["action"] == "commit").items():
        figures.record(f"soak_commits_{status}", count)
    figures.record("soak_seconds", int(SECONDS))
    figures.record("soak_lost_updates", len(lost))
    figures.record("soak_stuck_locks", len(crowbar.locks.all()))


def _get(attributes: dict, key: str):
    value = attributes
    for part in key.split("."):
        value = value[part]
    return value


def _typed(entry: dict):
    return int(entry["value"]) if entry["key"] in ("port", "size") else entry["value"]
