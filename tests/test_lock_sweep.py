"""``crowbar locks sweep``: expired lock items of crashed commands go; a live holder keeps its lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from barclamp_sdk.model.locks import TAKEOVER, LockManager
from barclamp_sdk.model.naming import LOCKS_BAG


def _dead_item(name: str, token: str = "0" * 32) -> dict:
    now = time.time()
    return {"id": name, "token": token, "owner": "crashed-host:4242:1", "purpose": "commit widget/default",
            "lease": 30.0, "acquired_at": now - 90, "expires_at": now - 60, "details": {}}


def test_sweep_removes_expired_items_and_markers_but_not_a_live_holders_lock(chef, crowbar, crowbar_cli):
    live = LockManager(chef, owner="live-host:1", lease=30.0)
    held = live.acquire("proposal-widget-live", "edit widget/live")
    chef.data_bags.ensure(LOCKS_BAG)
    chef.data_bags.create_item(LOCKS_BAG, _dead_item("proposal-widget-default"))
    chef.data_bags.create_item(LOCKS_BAG, _dead_item("machines-03", token="1" * 32))
    chef.data_bags.create_item(LOCKS_BAG, _dead_item(f"proposal-widget-default{TAKEOVER}{'0' * 32}", "2" * 32))
    try:
        code, out, err = crowbar_cli("locks", "sweep")
        assert code == 0, err
        assert "removed 2 expired lock item(s): machines-03, proposal-widget-default" in out  # its marker with it
        assert chef.data_bags.items(LOCKS_BAG) == ["proposal-widget-live"]
        live.ensure_valid(held)  # still ours: nothing was taken from the live holder
        assert crowbar.locks.sweep() == []  # nothing left to sweep
    finally:
        live.release(held)
    assert chef.data_bags.items(LOCKS_BAG) == []


HOLD = """
import time
from barclamp_sdk.api import connect
crowbar = connect(lock_lease=600)
crowbar.locks.acquire("proposal-widget-default", "commit widget/default r2", resumable=True)
crowbar.locks.acquire("machines-07", "commit widget/default r2")
print("held", flush=True)
time.sleep(600)
"""


def test_a_dead_commits_lock_survives_other_commands_clean_up_and_a_sweep_notes_it_in_the_document(
        chef, crowbar, crowbar_cli, crowbar_env, fleet):
    """A commit killed after its config role write: its resumable lock item is what says it is unfinished."""
    fleet.ready(1, "compute")
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    assert crowbar.proposals.commit("widget", "default").status == "unchanged"
    child = subprocess.Popen([sys.executable, "-c", HOLD], env=crowbar_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"held", child.stderr
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert crowbar.locks.inspect("proposal-widget-default")["resumable"] is True

    other = LockManager(chef, owner="other-operator:1", lease=30.0)
    with other.hold("machines-07", "allocate storage"):  # takes the dead one's shard lock over at once
        pass
    assert chef.data_bags.items(LOCKS_BAG) == ["proposal-widget-default"]  # its clean-up left the commit's lock
    assert crowbar.proposals.status("widget", "default").status == "interrupted"

    code, out, err = crowbar_cli("locks", "sweep")
    assert code == 0, err
    assert "proposal-widget-default" in out and chef.data_bags.items(LOCKS_BAG) == []
    status = crowbar.proposals.status("widget", "default")
    assert status.status == "interrupted" and "commit widget/default r2 by" in status.detail, status
    result = crowbar.proposals.commit("widget", "default")  # runs in full, as after the dead commit
    assert result.status == "applied", result
    assert crowbar.proposals.status("widget", "default").status != "interrupted"
