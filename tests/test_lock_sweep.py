"""``crowbar locks sweep``: expired lock items of crashed commands go; a live holder keeps its lock."""

from __future__ import annotations

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
