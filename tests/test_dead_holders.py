"""A lock held by a dead process of this host is taken over at once; other holders wait for their lease.

The holders here take their locks with a lease of 10 minutes, and the takers
give up long before it ends: a taker that succeeds did not wait for the lease.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.errors import LockTimeout
from barclamp_sdk.model.holders import PROCESS_KEY, holder_dead, process_identity
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.naming import LOCKS_BAG
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

LONG = 600.0
HOLD = """
import sys, time
from barclamp_sdk.api import connect
crowbar = connect(lock_lease=600)
crowbar.locks.acquire("proposal-widget-default", "commit widget/default")
crowbar.locks.acquire("machines-07", "commit widget/default")
print("held", flush=True)
time.sleep(600)
"""


def killed_holder(env: dict[str, str]) -> None:
    """A process that takes two locks with a 10-minute lease, then dies (SIGKILL)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"held", child.stderr
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)


def test_the_lock_of_a_killed_process_is_taken_over_at_once_and_status_says_it_is_gone(
        chef, crowbar_env, barclamps_under_test, fleet):
    fleet.ready(1, "compute")
    crowbar = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET, lock_timeout=60)
    crowbar.proposals.create("widget", "default")
    killed_holder(crowbar_env)
    item = crowbar.locks.inspect("proposal-widget-default")
    assert item is not None and not crowbar.locks.expired(item) and holder_dead(item)
    status = crowbar.proposals.status("widget", "default")
    assert status.status == "interrupted" and "that process is gone" in status.detail
    assert crowbar.proposals.commit("widget", "default").status == "applied"  # long before the lease ends
    crowbar.locks.sweep()  # the dead process's other lock, if the commit did not remove it (not expired either)
    assert chef.data_bags.items(LOCKS_BAG) == []


def _item(**process: object) -> dict[str, object]:
    now = time.time()
    return {"id": "queue", "token": "1" * 32, "owner": "someone:1:1", "purpose": "processing the queue",
            "lease": LONG, "acquired_at": now, "expires_at": now + LONG, "details": {},
            PROCESS_KEY: {**process_identity(), **process}}


@pytest.mark.parametrize("holder, dead", [
    ({}, False),  # this very process
    ({"pid": os.getppid()}, True),  # a live pid, but it started at another time: the pid was reused
    ({"host": "another-host", "pid": 999_999_999}, False),  # another host: its lease decides
    ({"pidns": "pid:[1]", "pid": 999_999_999}, False),  # another container on this host
    ({"pid": 999_999_999}, True),  # no such process here
])
def test_only_a_dead_process_of_this_host_is_taken_over_before_its_lease_ends(chef, holder, dead):
    chef.data_bags.ensure(LOCKS_BAG)
    chef.data_bags.create_item(LOCKS_BAG, _item(**holder))
    taker = LockManager(chef, owner="taker")
    if dead:
        taker.release(taker.acquire("queue", "x", timeout=30))
        assert chef.data_bags.items(LOCKS_BAG) == []
    else:
        with pytest.raises(LockTimeout):
            taker.acquire("queue", "x", timeout=0.5)  # its lease has 10 minutes to run
        assert chef.data_bags.items(LOCKS_BAG) == ["queue"]


def test_a_live_process_of_this_host_keeps_its_lock(chef):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        started = int(open(f"/proc/{sleeper.pid}/stat").read().rsplit(")", 1)[1].split()[19])
        chef.data_bags.ensure(LOCKS_BAG)
        chef.data_bags.create_item(LOCKS_BAG, _item(pid=sleeper.pid, start=started))
        with pytest.raises(LockTimeout):
            LockManager(chef, owner="taker").acquire("queue", "x", timeout=0.5)
    finally:
        sleeper.kill()
        sleeper.wait()
    LockManager(chef, owner="taker").acquire("queue", "x", timeout=30)  # now it is dead


def test_a_holder_on_another_host_is_waited_for_until_its_lease_ends_and_the_wait_is_told(chef, caplog):
    chef.data_bags.ensure(LOCKS_BAG)
    item = _item(host="another-host", pid=4242)
    item["expires_at"] = time.time() + 2  # crashed there: never renewed
    chef.data_bags.create_item(LOCKS_BAG, item)
    with caplog.at_level("WARNING", logger="barclamp_sdk.model.locks"):
        lock = LockManager(chef, owner="taker").acquire("queue", "x", timeout=120)
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for lock queue")]
    assert len(waits) == 1 and "someone:1:1" in waits[0] and "then its lease has ended" in waits[0], waits
    assert lock.details["took_over_from"]["owner"] == "someone:1:1"
