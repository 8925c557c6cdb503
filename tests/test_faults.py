"""Commits survive faults: a killed server, a killed committer, a lossy network.

Every test starts from the same saved state (a persisted goiardi holding 200
ready machines and an uncommitted widget proposal, copied per test), disturbs
a commit, commits again, and compares the full dump of every role with what
an undisturbed commit from that same state produced: they must be identical.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient
from barclamp_sdk.chef.config import RetryPolicy
from barclamp_sdk.errors import ChefError
from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.model.naming import LOCKS_BAG
from barclamp_sdk.testing.faultproxy import FaultProxy
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET, memory_requested
from tests.support import figures
from tests.support.widgets import TEST_BARCLAMPS

MACHINES = 200
ROOT = Path(__file__).resolve().parent.parent
FAST = RetryPolicy(attempts=4, total_timeout=3.0, backoff_initial=0.05, backoff_max=0.5)


def role_dump(chef: ChefClient) -> dict[str, dict]:
    return {name: chef.roles.get(name) for name in sorted(chef.roles.list())}


def crowbar_on(client: ChefClient, **options) -> Crowbar:
    return Crowbar(client, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET, **options)


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """(directory of a stopped persisted server before the commit, role dump of a clean commit)."""
    golden = tmp_path_factory.mktemp("golden")
    server = LocalChefServer(golden, persist=True, freeze_interval=60, memory=memory_requested()).start()  # saved at stop
    try:
        chef = server.client()
        crowbar = crowbar_on(chef)
        fleet = Fleet(chef, crowbar=crowbar)
        fleet.ready(MACHINES - 4, "compute") + fleet.ready(4, "storage")
        crowbar.proposals.create("widget", "default")
    finally:
        server.stop()  # SIGTERM: goiardi saves its data as it exits
    with started_copy(golden, tmp_path_factory.mktemp("clean")) as clean:
        crowbar = crowbar_on(clean.client())
        assert crowbar.proposals.commit("widget", "default").status == "applied"
        reference = role_dump(crowbar.chef)
    assert sum(1 for name in reference if name.startswith("crowbar-")) == MACHINES
    return golden, reference


class started_copy:
    """A persisted goiardi started on a copy of a saved server directory."""

    def __init__(self, source: Path, target: Path) -> None:
        shutil.copytree(source, target, dirs_exist_ok=True)
        (target / "server.json").unlink(missing_ok=True)
        self.server = LocalChefServer(target, persist=True, memory=memory_requested())

    def __enter__(self) -> LocalChefServer:
        return self.server.start()

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def wait_for_status(crowbar: Crowbar, wanted: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = crowbar.proposals.status("widget", "default")
        if status.status == wanted or time.monotonic() > deadline:
            return status.status
        time.sleep(0.2)


def assert_converged(crowbar: Crowbar, reference: dict) -> None:
    assert role_dump(crowbar.chef) == reference
    assert crowbar.proposals.status("widget", "default").status == "ready"
    assert crowbar.locks.all() == []  # no stuck locks


def assert_interrupted_then_resumed(crowbar: Crowbar, reference: dict, *, takeover: bool) -> None:
    """Shown as interrupted; committing again converges to the clean commit's dump."""
    assert role_dump(crowbar.chef) != reference  # the fault really interrupted it
    assert wait_for_status(crowbar, "interrupted") == "interrupted"
    result = crowbar.proposals.commit("widget", "default")
    assert result.status == "applied"
    if takeover:  # the dead holder's locks were taken over, not waited out forever
        assert crowbar.locks.takeovers >= 1
    assert_converged(crowbar, reference)
    figures.record("commits_interrupted", 1)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_chef_server_killed_in_the_middle_of_a_commit(saved_state, tmp_path, how):
    golden, reference = saved_state
    with started_copy(golden, tmp_path) as server:
        crowbar = crowbar_on(server.client(retry=FAST), lock_lease=10.0)
        written = 0
        guard = threading.Lock()

        def kill_half_way(count: int) -> None:
            nonlocal written
            with guard:
                written += count
                if written >= MACHINES // 2 and server.process is not None:
                    if how == signal.SIGKILL:
                        time.sleep(1.5)  # let one freeze interval pass: SIGKILL loses what came after
                    os.kill(server.process.pid, how)
                    server.process.wait(10)
                    server.process = None

        with pytest.raises(ChefError, match="Chef server"):
            crowbar.proposals.commit("widget", "default", progress=kill_half_way)
        assert 0 < written < MACHINES + 1
        server.start()  # same port, same data directory
        assert_interrupted_then_resumed(crowbar_on(server.client()), reference, takeover=True)
        figures.record("server_kills", 1)


def test_committing_process_killed_its_locks_are_taken_over(saved_state, tmp_path):
    golden, reference = saved_state
    with started_copy(golden, tmp_path) as server:
        proxy = FaultProxy(server.url, latency=0.03).start()  # slow enough to be killed half way
        try:
            proxy.fail_rate(1.0, ["latency"])
            env = {**os.environ, **server.environment(), "CHEF_SERVER_URL": proxy.url,
                   "PYTHONPATH": str(ROOT)}
            worker = subprocess.Popen([sys.executable, "-m", "tests.support.commit_worker", "widget", "default",
                                       "0", "6"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            crowbar = crowbar_on(server.client())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the first batch (the server) is done ...
                lock = crowbar.locks.inspect("proposal-widget-default")
                if lock and "batch" in (lock.get("details") or {}):
                    break
                assert worker.poll() is None, worker.communicate()
                time.sleep(0.05)
            time.sleep(0.5)  # ... and part of the second
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            proxy.stop()
        assert_interrupted_then_resumed(crowbar, reference, takeover=True)
        figures.record("committers_killed", 1)


def test_commit_through_a_network_failing_20_percent_of_requests(saved_state, tmp_path):
    golden, reference = saved_state
    with started_copy(golden, tmp_path) as server, FaultProxy(server.url, seed=7, latency=0.2) as proxy:
        proxy.fail_rate(0.2, ["503", "drop", "drop_after", "latency"])
        crowbar = crowbar_on(server.client(server_url=proxy.url, read_timeout=5.0,
                                           retry=RetryPolicy(attempts=10, total_timeout=30, backoff_initial=0.02,
                                                             backoff_max=0.2)))
        result = crowbar.proposals.commit("widget", "default")
        assert result.status == "applied"
        again = crowbar.proposals.commit("widget", "default")
        assert again.status == "unchanged"
        proxy.heal()
        assert_converged(crowbar_on(server.client()), reference)
        assert sum(proxy.faults.values()) >= 0.15 * proxy.requests > 0
        figures.record("faults_injected", sum(proxy.faults.values()))
        figures.record("requests_through_fault_proxy", proxy.requests)


def test_permanent_outage_fails_within_the_cap_and_the_commit_resumes(saved_state, tmp_path):
    golden, reference = saved_state
    with started_copy(golden, tmp_path) as server, FaultProxy(server.url) as proxy:
        crowbar = crowbar_on(server.client(server_url=proxy.url, retry=FAST), lock_lease=10.0)
        written = 0
        outage_at: list[float] = []
        guard = threading.Lock()

        def cut(count: int) -> None:
            nonlocal written
            with guard:
                written += count
                if written >= MACHINES // 2 and not outage_at:
                    proxy.fail_always("drop")
                    outage_at.append(time.monotonic())

        with pytest.raises(ChefError) as info:
            crowbar.proposals.commit("widget", "default", progress=cut)
        failed_after = time.monotonic() - outage_at[0]
        message = str(info.value)
        assert "cannot reach the Chef server" in message and "\n" not in message
        # One retry cap (3 s) for the writes in flight, then cleanup tries each request once.
        assert failed_after < 3 * FAST.total_timeout
        proxy.heal()
        assert_interrupted_then_resumed(crowbar_on(server.client()), reference, takeover=False)
        figures.record("outages", 1)


def test_no_lock_items_are_left_behind_by_a_clean_commit(saved_state, tmp_path):
    golden, _ = saved_state
    with started_copy(golden, tmp_path) as server:
        crowbar = crowbar_on(server.client())
        assert crowbar.proposals.commit("widget", "default").status == "applied"
        assert crowbar.chef.data_bags.items(LOCKS_BAG) == []
        assert crowbar.proposals.status("widget", "default").status == "ready"
