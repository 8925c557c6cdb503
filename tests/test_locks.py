"""Locks on the real server: exclusion, takeover, order, renewal."""

from __future__ import annotations

import threading
import time

import pytest

from barclamp_sdk.errors import ConcurrencyError, LockTimeout
from barclamp_sdk.model.locks import LockManager, lock_order


def test_only_one_holder_among_racing_threads(chef_server, chef):
    managers = [LockManager(chef_server.new_client(), owner=f"p{i}") for i in range(8)]
    counter = {"inside": 0, "max_inside": 0, "total": 0}
    guard = threading.Lock()

    def work(manager):
        for _ in range(5):
            with manager.hold("proposal-x-default", "test"):
                with guard:
                    counter["inside"] += 1
                    counter["max_inside"] = max(counter["max_inside"], counter["inside"])
                time.sleep(0.002)
                with guard:
                    counter["inside"] -= 1
                    counter["total"] += 1

    threads = [threading.Thread(target=work, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter == {"inside": 0, "max_inside": 1, "total": 40}
    assert chef.data_bags.items("crowbar_locks") == []


def test_timeout_names_the_holder(chef):
    holder = LockManager(chef, owner="holder-host:1")
    waiter = LockManager(chef, owner="waiter")
    with holder.hold("queue", "processing the queue"):
        with pytest.raises(LockTimeout) as info:
            waiter.acquire("queue", "x", timeout=0.3)
    message = str(info.value)
    assert "holder-host:1" in message and "processing the queue" in message


def test_expired_lock_is_taken_over_exactly_once(chef_server, chef):
    dead = LockManager(chef, owner="dead", lease=0.5, clock_skew=0)
    lock = dead.acquire("proposal-a-b", "commit")
    dead._held.clear()  # the process "dies": no renewal, no release
    time.sleep(0.7)
    winners = []
    guard = threading.Lock()
    takers = [LockManager(chef_server.new_client(), owner=f"t{i}", clock_skew=0) for i in range(6)]

    def take(manager):
        try:
            manager.acquire("proposal-a-b", "finish the commit", timeout=0.5)
        except LockTimeout:
            return
        with guard:
            winners.append(manager.owner)
        time.sleep(1.0)  # hold past everyone's timeout

    threads = [threading.Thread(target=take, args=(m,)) for m in takers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    item = chef.data_bags.get_item("crowbar_locks", "proposal-a-b")
    assert item["owner"].startswith(winners[0])
    assert item["details"]["took_over_from"]["owner"].startswith("dead")
    assert sum(m.takeovers for m in takers) == 1
    # The stale holder notices before writing.
    lock.expires_at = time.time() - 1
    with pytest.raises(ConcurrencyError, match="lost lock"):
        dead.ensure_valid(lock)
    # And its late release does not delete the new holder's lock.
    dead.release(lock)
    assert chef.data_bags.get_item("crowbar_locks", "proposal-a-b")["owner"].startswith(winners[0])


def test_global_order_is_enforced(chef):
    manager = LockManager(chef)
    assert sorted(["machines-03", "queue", "proposal-z", "machines-01"], key=lock_order) == [
        "proposal-z", "queue", "machines-01", "machines-03"]
    with manager.hold("machines-05", "x"):
        with pytest.raises(ConcurrencyError, match="lock order violated"):
            manager.acquire("queue", "y")
        with manager.hold("machines-07", "fine: later in the order"):
            pass


def test_holding_takes_in_order_and_is_reentrant(chef):
    manager = LockManager(chef)
    with manager.holding(["machines-02", "proposal-p", "machines-01"], "batch") as locks:
        assert [l.name for l in locks] == ["proposal-p", "machines-01", "machines-02"]
        with manager.hold("proposal-p", "nested"):
            pass
        assert chef.data_bags.find_item("crowbar_locks", "proposal-p") is not None
    assert chef.data_bags.items("crowbar_locks") == []


def test_lease_is_renewed_while_held(chef):
    manager = LockManager(chef, lease=0.6)
    other = LockManager(chef, clock_skew=0)
    with manager.hold("proposal-long", "long job") as lock:
        first_expiry = lock.expires_at
        time.sleep(1.5)
        manager.ensure_valid(lock)
        assert lock.expires_at > first_expiry
        with pytest.raises(LockTimeout):
            other.acquire("proposal-long", "x", timeout=0.2)


def test_progress_is_recorded_in_the_lock(chef):
    manager = LockManager(chef)
    with manager.hold("proposal-c-d", "commit c/d r2") as lock:
        manager.update(lock, batch=1, batches=3)
        item = manager.inspect("proposal-c-d")
        assert item["details"] == {"batch": 1, "batches": 3}
        assert [i["id"] for i in manager.all()] == ["proposal-c-d"]
