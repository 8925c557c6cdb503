"""Nothing lost: chef-client runs, parallel edits and parallel processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from barclamp_sdk.model.naming import node_role_name

ROOT = Path(__file__).resolve().parent.parent


def ready_machines(crowbar, fleet, count, profile="compute"):
    return fleet.ready(count, profile, clients=False)


def test_multi_master_in_a_fixed_interleaving(crowbar, fleet, chef):
    """chef-client saves a stale node: a node attribute is lost, the role survives."""
    [name] = ready_machines(crowbar, fleet, 1)
    stale = chef.nodes.get(name)  # chef-client starts its run
    # A server-side tool writes into the node...
    node = chef.nodes.get(name)
    node["normal"]["crowbar_assignment"] = "widget-agent"
    chef.nodes.update(name, node)
    # ...while barclamp-sdk writes into the machine's role.
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    # chef-client ends its run: it saves the whole node it read at the start.
    stale["automatic"]["ohai_time"] = time.time()
    chef.nodes.update(name, stale)
    assert "crowbar_assignment" not in chef.nodes.get(name)["normal"]  # lost
    role = chef.roles.get(node_role_name(name))
    assert "role[widget-agent]" in role["run_list"]  # survived
    assert fleet.converge(name)["automatic"]["recipes"][-1] == "widget::agent"


def test_multi_master_under_parallel_chef_client_runs(crowbar, fleet, chef):
    names = ready_machines(crowbar, fleet, 12)
    stop = threading.Event()
    runs = {"count": 0}

    def chef_client(name):
        while not stop.is_set():
            fleet.converge(name, pause=0.02)
            runs["count"] += 1

    # A naive tool keeps a counter in node attributes, as a contrast.
    node_writes = {"done": 0}

    def naive_tool(name):
        while not stop.is_set():
            node = chef.nodes.get(name)
            normal = node.setdefault("normal", {})
            normal["tool_counter"] = int(normal.get("tool_counter", 0)) + 1
            chef.nodes.update(name, node)
            node_writes["done"] += 1
            time.sleep(0.005)

    threads = [threading.Thread(target=chef_client, args=(n,)) for n in names]
    threads += [threading.Thread(target=naive_tool, args=(n,)) for n in names[:4]]
    for thread in threads:
        thread.start()
    try:
        crowbar.proposals.create("widget", "default")
        crowbar.proposals.create("gizmo", "default")
        expected_ports = []
        for round_ in range(4):
            port = 9000 + round_
            crowbar.proposals.set("widget", "default", {
                "port": str(port), "elements.widget-agent": ",".join(names[round_:round_ + 8])})
            crowbar.proposals.set("gizmo", "default", {"elements.gizmo-node": ",".join(names[-(round_ + 2):])})
            assert crowbar.proposals.commit("widget", "default").status == "applied"
            assert crowbar.proposals.commit("gizmo", "default").status == "applied"
            expected_ports.append(port)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert runs["count"] > len(names)
    widget = crowbar.proposals.get("widget", "default")
    gizmo = crowbar.proposals.get("gizmo", "default")
    assert chef.roles.get("widget-config-default")["default_attributes"]["widget"]["port"] == expected_ports[-1]
    for name in names:
        role_map = chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]["run_list_map"]
        assert ("widget-agent" in role_map) == (name in widget.elements["widget-agent"]), name
        assert ("gizmo-node" in role_map) == (name in gizmo.elements["gizmo-node"]), name
        assert f"role[{node_role_name(name)}]" in chef.nodes.get(name)["run_list"]
    # The contrast: the node-attribute counter lost updates to chef-client.
    stored = sum(int(chef.nodes.get(n)["normal"].get("tool_counter", 0)) for n in names[:4])
    assert stored < node_writes["done"], (stored, node_writes)


def test_four_processes_commit_four_barclamps_onto_the_same_50_machines(chef_server, crowbar, fleet, chef):
    names = ready_machines(crowbar, fleet, 50)
    for barclamp in ("widget", "gizmo", "sprocket", "cog"):
        crowbar.proposals.create(barclamp, "default")
    env = {**os.environ, **chef_server.server.environment(), "PYTHONPATH": str(ROOT)}
    start_at = time.time() + 3.0
    workers = [
        subprocess.Popen([sys.executable, "-m", "tests.support.commit_worker", barclamp, "default", str(start_at)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for barclamp in ("widget", "gizmo", "sprocket", "cog")
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert json.loads(out)["status"] == "applied"
    checked = 0
    covered = set()
    for barclamp in ("widget", "gizmo", "sprocket", "cog"):
        proposal = crowbar.proposals.get(barclamp, "default")
        covered |= set(proposal.nodes())
        for name in proposal.nodes():
            role = chef.roles.get(node_role_name(name))
            wanted = set(proposal.elements_of(name)) | {proposal.config_role}
            assert wanted <= set(role["default_attributes"]["crowbar"]["run_list_map"]), (barclamp, name)
            assert {f"role[{r}]" for r in wanted} <= set(role["run_list"])
            checked += 1
    assert checked >= 150  # widget, sprocket and cog hold all 50 machines
    assert covered == set(names)
    assert crowbar.locks.all() == []
    for barclamp in ("widget", "gizmo", "sprocket", "cog"):
        assert crowbar.proposals.commit(barclamp, "default").status == "unchanged"
