"""A crash at every step: each operation killed after each of its writes, then run again, ends as undisturbed."""

from __future__ import annotations

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.testing.crashsteps import crash_at_every_step
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support import figures


def committed(count: int):
    def setup(crowbar: Crowbar) -> None:
        Fleet(crowbar.chef, crowbar=crowbar).ready(count, "compute")
        crowbar.proposals.create("widget", "default")
        assert crowbar.proposals.commit("widget", "default").status == "applied"
    return setup


def created(count: int):
    def setup(crowbar: Crowbar) -> None:
        Fleet(crowbar.chef, crowbar=crowbar).ready(count, "compute")
        crowbar.proposals.create("widget", "default")
    return setup


def queued(crowbar: Crowbar) -> None:
    fleet = Fleet(crowbar.chef, crowbar=crowbar)
    fleet.boot(fleet.add(2, "compute"))  # paused at discovered: the commit queues
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "queued"


OPERATIONS = {
    "commit of 6 machines in 2 batches": (created(6), ["commit"]),
    "edit": (created(2), ["edit", "port=9001"]),
    "secret change": (created(2), ["edit", "password=n3w-s3cret"]),
    "deactivate": (committed(3), ["deactivate"]),
    "dequeue": (queued, ["dequeue"]),
    "delete": (created(0), ["delete"]),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_killed_after_any_write_then_run_again_ends_as_undisturbed(operation, chef_server, chef, crowbar_env,
                                                                  barclamps_under_test):
    setup, action = OPERATIONS[operation]

    def fresh() -> Crowbar:
        chef_server.reset()
        return Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)

    report = crash_at_every_step(fresh, setup, ["widget", "default", *action], crowbar_env)
    print(f"{operation}: {report.steps} of {report.writes} steps tried, {len(report.mismatches)} mismatches, "
          f"{report.dead_locks} dead lock item(s) left where the rerun needed no lock")
    print("\n".join(f"  {k}. {m} {p}" for k, (m, p) in enumerate(report.requests, 1)))
    print("\n".join(report.mismatches))
    figures.record("crash_steps_tried", report.steps)
    figures.record("crash_steps_mismatches", len(report.mismatches))
    figures.record("crash_steps_dead_locks_left", report.dead_locks)
    assert report.steps == report.writes > 0
    assert report.mismatches == []
