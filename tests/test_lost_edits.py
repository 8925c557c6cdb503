"""Nothing lost: every read-modify-write of a proposal reads its input under the proposal lock.

Each regression test pauses one command right after it has read the proposal,
saves an edit from a second client meanwhile, then lets the first go on: the
acknowledged edit is kept, revisions only go forward, and history keeps it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.errors import ConcurrencyError
from barclamp_sdk.model.naming import proposal_lock_name
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.pause import WAIT, Paused


def edit_meanwhile(other: Crowbar, paused: Paused, description: str) -> int:
    """Save an edit from ``other`` while ``paused`` waits; returns its acknowledged revision.

    The edit either completes (the paused command holds no lock yet) or waits
    for the proposal lock (it does): the paused command is let go once either
    is seen, so the test never depends on timing.
    """
    done, waiting = threading.Event(), threading.Event()
    saved: list[int] = []
    errors: list[BaseException] = []
    original = other.locks._try_create

    def try_create(name: str, purpose: str, *args: Any) -> Any:
        lock = original(name, purpose, *args)
        if lock is None and name == proposal_lock_name("widget", "default"):
            waiting.set()
        return lock

    other.locks._try_create = try_create  # type: ignore[method-assign]

    def run() -> None:
        try:
            saved.append(other.proposals.set("widget", "default", {"description": description}).revision)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    editor = threading.Thread(target=run, name="editor")
    editor.start()
    for _ in range(int(WAIT * 10)):
        if done.wait(0.05) or waiting.is_set():
            break
    paused.finish()
    editor.join(WAIT)
    if errors:
        raise errors[0]
    return saved[0]


def assert_kept(crowbar: Crowbar, description: str, revision: int, before: int) -> None:
    current = crowbar.proposals.get("widget", "default")
    assert current.description == description, "the acknowledged edit was lost"
    assert current.revision >= revision > before, "the revision went back"
    # One more edit must not overwrite the acknowledged revision's history item.
    crowbar.proposals.set("widget", "default", {"port": 9090})
    assert crowbar.proposals.revision("widget", "default", revision).description == description
    revisions = [int(h["revision"]) for h in crowbar.proposals.history("widget", "default")]
    assert revisions == sorted(set(revisions)) and revisions[-1] == crowbar.proposals.get("widget", "default").revision


@pytest.fixture
def other(chef: Any, barclamps_under_test: list[Any]) -> Crowbar:
    """A second client, as another operator's process would be."""
    return Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)


def test_an_edit_saved_while_deactivate_runs_is_kept(crowbar, other, fleet, chef, monkeypatch):
    fleet.ready(2, "compute")
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    before = crowbar.proposals.get("widget", "default").revision
    paused = Paused(crowbar, monkeypatch)
    paused.start(lambda: crowbar.proposals.deactivate("widget", "default"))
    revision = edit_meanwhile(other, paused, "edited while deactivating")
    assert chef.roles.find("widget-config-default") is None
    assert_kept(crowbar, "edited while deactivating", revision, before)


def test_an_edit_saved_while_dequeue_runs_is_kept(crowbar, other, fleet, monkeypatch):
    names = fleet.add(2, "compute")
    fleet.boot(names)  # paused at discovered: the commit queues
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "queued"
    before = crowbar.proposals.get("widget", "default").revision
    paused = Paused(crowbar, monkeypatch)
    paused.start(lambda: crowbar.proposals.dequeue("widget", "default"))
    revision = edit_meanwhile(other, paused, "edited while dequeuing")
    assert not crowbar.proposals.get("widget", "default").queued
    assert crowbar.queue.items() == []
    assert_kept(crowbar, "edited while dequeuing", revision, before)


def test_a_document_read_without_its_lock_is_never_written(crowbar, fleet):
    crowbar.proposals.create("widget", "default", from_inventory=False)
    store = crowbar.proposals.store
    stale = store.get("widget", "default")
    stale.queued = True
    with crowbar.locks.hold(proposal_lock_name("widget", "default"), "test"):
        with pytest.raises(ConcurrencyError, match="read without holding its lock"):
            store.write_status(stale)
    with pytest.raises(ConcurrencyError, match="without holding its lock"):
        store.write_status(stale)
    assert not crowbar.proposals.get("widget", "default").queued
    # The one read-modify-write path reads under the lock.
    store.modify("widget", "default", lambda p: setattr(p, "queued", True), purpose="test")
    assert crowbar.proposals.get("widget", "default").queued


def test_a_history_item_left_by_a_dead_writer_is_replaced_but_a_current_one_never(crowbar, chef):
    crowbar.proposals.create("widget", "default", from_inventory=False)
    # A writer died after keeping revision 2 in history, before storing the document.
    doc = crowbar.proposals.get("widget", "default").data
    chef.data_bags.create_item("crowbar_history", {"id": "widget-default-2", "revision": 2,
                                                   "proposal": "bc-widget-default", "document": doc,
                                                   "change": "never became current"})
    crowbar.proposals.set("widget", "default", {"port": 9091})
    assert crowbar.proposals.revision("widget", "default", 2).settings.port == 9091
    assert [h["change"] for h in crowbar.proposals.history("widget", "default")] == [
        "created", "set port"]
