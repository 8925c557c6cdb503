"""Lock takeover recovers from a crash at any of its steps, with real processes killed by SIGKILL.

A committer is killed mid-commit; a second one is killed while it takes over
the expired lock (its takeover marker left behind); the next commit still
finishes, without waiting for any lease (both holders were processes of this
host, known dead), says so once, and leaves no lock item behind.
Leases are long (8 s) so a busy machine does not make live holders look dead.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

from barclamp_sdk import Crowbar
from barclamp_sdk.model.locks import TAKEOVER
from barclamp_sdk.model.naming import LOCKS_BAG, node_role_name
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent
LEASE = 8.0


def committer(env: dict[str, str], url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.support.commit_worker", "widget", "default", "0",
                             str(LEASE)], env={**env, "CHEF_SERVER_URL": url}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until(condition, worker: subprocess.Popen[bytes], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.poll() is None, f"the worker ended before {what}: {worker.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def lock_items(chef) -> list[str]:
    return chef.data_bags.items(LOCKS_BAG)


def test_a_taker_killed_half_way_leaves_no_lock_stuck(chef, fleet, crowbar_env, barclamps_under_test,
                                                      fault_proxy, caplog):
    names = fleet.ready(6, "compute")
    observer = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)
    observer.proposals.create("widget", "default")
    # 1. A committer, slowed by a proxy, is killed after its first batch.
    first = committer(crowbar_env, fault_proxy(latency=0.3).fail_rate(1.0, ["latency"]).url)
    wait_until(lambda: "batch" in ((observer.locks.inspect("proposal-widget-default") or {}).get("details") or {}),
               first, "the first batch was written")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert observer.proposals.status("widget", "default").status == "interrupted"  # its process is gone
    # 2. The next committer is killed while it takes over: right after it created its marker.
    second = committer(crowbar_env, fault_proxy(latency=1.0).fail_rate(1.0, ["latency"]).url)
    wait_until(lambda: any(TAKEOVER in i for i in lock_items(chef)), second, "the takeover marker exists")
    second.send_signal(signal.SIGKILL)
    second.wait(10)
    assert any(TAKEOVER in i for i in lock_items(chef))
    status = observer.proposals.status("widget", "default")
    assert status.status == "interrupted" and "commit again" in status.detail
    # 3. Committing again recovers at once: the dead taker's marker is taken over too.
    crowbar = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET, lock_lease=LEASE, lock_timeout=90)
    with caplog.at_level(logging.INFO, logger="barclamp_sdk.model.locks"):
        result = crowbar.proposals.commit("widget", "default")
    assert result.status == "applied"
    assert lock_items(chef) == []  # no lock, shard lock or marker left behind
    assert crowbar.proposals.status("widget", "default").status == "ready"
    for name in names:
        assert "widget-agent" in chef.roles.get(node_role_name(name))["default_attributes"]["crowbar"]["run_list_map"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [m for m in warnings if m.startswith("waiting for lock")] == []  # dead holders: no lease to wait for
    taken = [m for m in warnings if m.startswith("took over lock of a dead process, proposal-widget-default")]
    assert len(taken) == 1 and "held by" in taken[0], warnings
    assert len(warnings) <= 3, warnings
