"""Held locks are renewed while held, whatever the load, and never taken over by their own process."""

from __future__ import annotations

import json
import threading
import time

import pytest

from barclamp_sdk.errors import LockTimeout
from barclamp_sdk.model.locks import LockManager
from tests.support import figures


def test_a_late_renewal_never_lets_the_same_process_take_its_own_live_lock(chef, monkeypatch):
    # Expiry is forced (renewals blocked), not hoped for: the short lease only makes the test quick.
    locks = LockManager(chef, lease=2.0, clock_skew=0.5, timeout=60)
    renewals_may_go = threading.Event()
    original_renew = locks._renew

    def renew(lock):
        if threading.current_thread().name not in ("first", "second", "MainThread"):  # the renewer
            assert renewals_may_go.wait(60)
        original_renew(lock)

    monkeypatch.setattr(locks, "_renew", renew)
    expired_seen = threading.Event()
    original_read = locks._read

    def read(name):
        item = original_read(name)
        if threading.current_thread().name == "second" and item is not None and locks.expired(item):
            expired_seen.set()
        return item

    monkeypatch.setattr(locks, "_read", read)
    order: list[str] = []
    holder_go = threading.Event()

    def hold() -> None:
        with locks.hold("machines-07", "transition (the first thread)") as lock:
            assert holder_go.wait(60)
            locks.ensure_valid(lock)  # renewed late, but never taken: still ours
            order.append("first done")

    def take() -> None:
        with locks.hold("machines-07", "transition (the second thread)"):
            order.append("second got it")

    first = threading.Thread(target=hold, name="first")
    first.start()
    while locks.inspect("machines-07") is None:
        time.sleep(0.01)
    second = threading.Thread(target=take, name="second")
    second.start()
    assert expired_seen.wait(60)  # the second thread saw the expired item ...
    time.sleep(0.5)  # ... and kept waiting (a takeover would take it now; this pause only gives it the chance)
    assert locks.takeovers == 0, "a thread took over a lock its own process holds alive"
    renewals_may_go.set()
    while locks._held["machines-07"].expires_at < time.time() + 1:  # renewed late, but renewed
        time.sleep(0.01)
    holder_go.set()
    first.join(60)
    second.join(60)
    assert order == ["first done", "second got it"]
    assert locks.takeovers == 0
    assert locks.all() == []


def test_renewal_keeps_up_with_many_locks_on_a_busy_process(chef):
    lease = 6.0
    locks = LockManager(chef, lease=lease, timeout=60)
    rival = LockManager(chef, owner="rival:1", lease=lease, timeout=60)
    names = [f"machines-{i:02d}" for i in range(32)]
    stop = threading.Event()

    def busy() -> None:  # holds the GIL as much as it can, like a boot storm's threads
        blob = {"k": list(range(2000))}
        while not stop.is_set():
            json.loads(json.dumps(blob))

    hogs = [threading.Thread(target=busy) for _ in range(3)]
    for hog in hogs:
        hog.start()
    taken = 0
    try:
        with locks.holding(names, "boot storm") as held:
            deadline = time.monotonic() + 2.2 * lease
            while time.monotonic() < deadline:
                for name in names[::8]:
                    with pytest.raises(LockTimeout):
                        rival.acquire(name, "a rival", timeout=0)
                    taken += 1
                time.sleep(0.5)
            for lock in held:
                locks.ensure_valid(lock)
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    assert rival.takeovers == 0 and locks.takeovers == 0 and taken
    margin = lease * 2 / 3 - locks.renew_lateness
    print(f"renewal lateness max {locks.renew_lateness:.2f}s of a {lease:.0f}s lease (margin {margin:.2f}s)")
    figures.record("renew_lateness_max_ms", int(locks.renew_lateness * 1000))
    assert locks.renew_lateness < lease / 2  # a sixth of the lease still to spare, at the worst
    assert locks.all() == []
