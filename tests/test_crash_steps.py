"""A crash at every step: each operation killed after each of its writes, then run again, ends as undisturbed.

Every k from 1 to the operation's number of writes, for every operation, in CI.
Each operation also runs with another operator's command between the kill and
the rerun (from another process): the end is then that of an undisturbed run
of the other command then the operation, or of the operation, the other
command, the operation (when the killed one had taken effect). Each k starts
from a database restore of the state its set-up built once, and the rerun
never waits for a lease (the killed child's locks are taken over at once); see
docs/reliability.md for the figures and times.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.model.naming import LOCKS_BAG, PROPOSALS_BAG, proposal_lock_name
from barclamp_sdk.testing.crashsteps import crash_at_every_step
from barclamp_sdk.testing.fleet import Fleet
from tests.support import figures

NEW_SECRET = b"the rotated secret of the crash tests, not for production"
#: Where setups leave files the actions read (a scenario, a new secret).
FILES = Path(os.environ.get("TMPDIR", "/tmp")) / f"crash-steps-{os.getpid()}"


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


def revised(crowbar: Crowbar) -> None:
    """A proposal committed at two revisions: r1 (port 9100), then an edit (port 9001)."""
    committed(2)(crowbar)
    crowbar.proposals.set("widget", "default", {"port": 9001})
    assert crowbar.proposals.commit("widget", "default").status == "applied"


def queued(crowbar: Crowbar) -> None:
    fleet = Fleet(crowbar.chef, crowbar=crowbar)
    fleet.boot(fleet.add(2, "compute"))  # paused at discovered: the commit queues
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "queued"


def under_an_expired_lock(crowbar: Crowbar) -> None:
    """A proposal whose lock a crashed committer left (its lease ended a minute ago)."""
    created(2)(crowbar)
    crowbar.chef.data_bags.ensure(LOCKS_BAG)
    now = time.time()
    crowbar.chef.data_bags.create_item(LOCKS_BAG, {
        "id": proposal_lock_name("widget", "default"), "token": "0" * 32,
        "owner": "crashed-host:4242:1", "purpose": "commit widget/default", "lease": 30.0,
        "acquired_at": now - 90, "expires_at": now - 60, "details": {}})


def two_secrets(crowbar: Crowbar) -> None:
    """Two proposals, each with a password; and the new secret's file."""
    created(2)(crowbar)
    crowbar.proposals.create("widget", "other")
    FILES.mkdir(exist_ok=True)
    secret = FILES / "new_secret"
    secret.write_bytes(NEW_SECRET)
    secret.chmod(0o600)


def a_scenario(crowbar: Crowbar) -> None:
    """Two machines and a scenario of three proposals to commit."""
    first, second = Fleet(crowbar.chef, crowbar=crowbar).ready(2, "compute")
    FILES.mkdir(exist_ok=True)
    (FILES / "scenario.yaml").write_text(f"""\
proposals:
- barclamp: widget
  attributes: {{port: 9100}}
  deployment: {{elements: {{widget-server: [{first}], widget-agent: [{first}, {second}]}}}}
- barclamp: gizmo
  deployment: {{elements: {{gizmo-node: [{second}]}}}}
- barclamp: sprocket
  deployment: {{elements: {{sprocket-node: [{first}, {second}]}}}}
""")


EDIT = ["widget", "default", "edit", "port=9001"]
COMMIT = ["widget", "default", "commit"]
#: name: (setup, action, another operator's command); the heaviest first (so that no long
#: test starts last on a worker of its own, see tests/support/parallel.py).
OPERATIONS = {
    "commit of 20 machines in 2 batches": (created(20), COMMIT, EDIT),
    "batch apply of 3 proposals": (a_scenario, ["-", "-", "batch", f"file={FILES / 'scenario.yaml'}"], EDIT),
    "commit of 6 machines in 2 batches": (created(6), COMMIT, EDIT),
    "deactivate": (committed(3), ["widget", "default", "deactivate"], COMMIT),
    "dequeue": (queued, ["widget", "default", "dequeue"], COMMIT),
    "revert (to r1, then commit)": (revised, ["widget", "default", "revert", "revision=1"], EDIT),
    "lock takeover (edit under an expired lock)": (under_an_expired_lock, EDIT, COMMIT),
    "secret change": (created(2), ["widget", "default", "edit", "password=n3w-s3cret"], EDIT),
    "secret rotation": (two_secrets, ["-", "-", "rotate", f"file={FILES / 'new_secret'}"],
                        ["widget", "default", "edit", "password=changed-meanwhile"]),
    "edit": (created(2), EDIT, COMMIT),
    "delete": (created(0), ["widget", "default", "delete"], EDIT),
}


@pytest.mark.parametrize("after", ["the same command", "another operator's command"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_killed_after_any_write_then_run_again_ends_as_undisturbed(operation, after, chef_server, crowbar_env,
                                                                  barclamps_under_test, crowbar_clients):
    setup, action, other = OPERATIONS[operation]
    client, fresh = crowbar_clients

    def viewer(crowbar: Crowbar) -> Crowbar:
        return Crowbar(crowbar.chef, barclamps=barclamps_under_test, secret=NEW_SECRET)

    started = time.monotonic()
    report = crash_at_every_step(fresh, setup, action, crowbar_env,
                                 other=other if after != "the same command" else None,
                                 snapshot=chef_server.database_snapshot(), client=client,
                                 viewer=viewer if "rotate" in action else None)
    print(f"{operation}, then {after}: {report.steps} of {report.writes} steps tried, "
          f"{len(report.mismatches)} mismatches, {report.dead_locks} dead lock item(s) swept "
          f"(none left), {time.monotonic() - started:.0f}s")
    print("\n".join(f"  {k}. {m} {p}" for k, (m, p) in enumerate(report.requests, 1)))
    print("\n".join(report.mismatches))
    figures.record("crash_steps_tried", report.steps)
    figures.record("crash_steps_mismatches", len(report.mismatches))
    figures.record("crash_steps_dead_locks_swept", report.dead_locks)
    assert report.steps == report.writes > 0  # every k
    assert report.mismatches == []


def test_without_a_snapshot_each_step_builds_its_state_again_and_a_difference_is_seen(
        crowbar_env, crowbar_clients):
    """The in-memory store's way (no snapshot: ``fresh`` and ``setup`` before each k); a set-up
    that leaves something else each time differs at every k, and the harness says where."""
    def setup(crowbar: Crowbar) -> None:
        created(0)(crowbar)
        crowbar.chef.data_bags.create_item(PROPOSALS_BAG, {"id": "scratch", "value": uuid.uuid4().hex})

    report = crash_at_every_step(crowbar_clients[1], setup, EDIT, crowbar_env)
    print("\n".join(report.mismatches))
    assert report.steps == report.writes > 0
    assert len(report.mismatches) == report.writes
    assert all("differs in proposals/scratch (.value: " in m for m in report.mismatches)
