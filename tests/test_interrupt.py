"""Ctrl-C (and SIGTERM) stop a commit at the next write boundary, in a real terminal.

No request is sent after the message; the proposal records how far it got;
``status`` and ``diff`` tell the truth; committing again finishes the job.
Requests are counted by a proxy in front of the server (slowed, so the
commit is surely half way when interrupted).
"""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

ROOT = Path(__file__).resolve().parent.parent
CROWBAR = str(Path(sys.executable).with_name("crowbar"))
MACHINES = 40


def role_writes(proxy) -> int:
    return sum(1 for method, path in list(proxy.seen) if method == "PUT" and "/roles/crowbar-" in path)


def holding(chef, names) -> int:
    """Machines whose role holds the proposal's agent role."""
    return sum(1 for n in names if "widget-agent" in
               chef.roles.get(node_role_name(n))["default_attributes"]["crowbar"].get("run_list_map", {}))


@pytest.mark.parametrize("how", ["SIGINT twice", "SIGTERM"])
def test_an_interrupted_commit_stops_at_a_write_boundary_and_resumes(chef, fleet, crowbar_env, fault_proxy,
                                                                     barclamps_under_test, how):
    names = fleet.ready(MACHINES, "compute")
    crowbar = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)
    crowbar.proposals.create("widget", "default")
    proxy = fault_proxy(latency=0.5).fail_rate(1.0, ["latency"])
    child = pexpect.spawn(CROWBAR, ["widget", "proposal", "commit", "default"],
                          env={**crowbar_env, "CHEF_SERVER_URL": proxy.url}, cwd=str(ROOT), timeout=120,
                          encoding="utf-8", dimensions=(40, 160))
    deadline = time.monotonic() + 120
    while role_writes(proxy) < 3:  # the commit is writing machine roles
        assert child.isalive() and time.monotonic() < deadline, child.read_nonblocking(10000, 0)
        time.sleep(0.02)
    if how == "SIGTERM":
        child.kill(signal.SIGTERM)
    else:
        child.sendintr()
        child.sendintr()  # a second Ctrl-C while it stops changes nothing
    child.expect(r"interrupted: (.*)\r?\n")
    message = child.match.group(1)
    sent_before_message = len(proxy.seen)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert len(proxy.seen) == sent_before_message, "requests were sent after the message"
    done = int(re.search(r"after (\d+) of", message).group(1))
    assert 0 < holding(chef, names) < MACHINES
    assert done >= holding(chef, names)
    status = crowbar.proposals.status("widget", "default")
    assert status.status == "interrupted" and "commit again to finish it" in status.detail
    assert f"after {done} of" in status.detail
    assert "partly" in crowbar.proposals.diff("widget", "default").old_label
    assert crowbar.locks.all() == []  # released before the message
    # Committing again finishes the job.
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    assert holding(chef, names) == MACHINES
    assert crowbar.proposals.status("widget", "default").status == "ready"


def test_an_interrupted_deactivate_in_a_terminal_says_so_and_resumes(chef, fleet, crowbar_env, fault_proxy,
                                                                    barclamps_under_test):
    """Ctrl-C of a deactivate: no request after the message, status interrupted (not "ready"), and
    deactivating again takes the rest of the machines off."""
    names = fleet.ready(MACHINES, "compute")
    crowbar = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)
    crowbar.proposals.create("widget", "default")
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    proxy = fault_proxy(latency=0.5).fail_rate(1.0, ["latency"])
    child = pexpect.spawn(CROWBAR, ["widget", "proposal", "deactivate", "default"],
                          env={**crowbar_env, "CHEF_SERVER_URL": proxy.url}, cwd=str(ROOT), timeout=120,
                          encoding="utf-8", dimensions=(40, 160))
    deadline = time.monotonic() + 120
    while role_writes(proxy) < 3:  # the deactivate is taking roles off the machines
        assert child.isalive() and time.monotonic() < deadline, child.read_nonblocking(10000, 0)
        time.sleep(0.02)
    child.sendintr()
    child.expect(r"interrupted: (.*)\r?\n")
    sent_before_message = len(proxy.seen)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert len(proxy.seen) == sent_before_message, "requests were sent after the message"
    assert 0 < holding(chef, names) < MACHINES
    status = crowbar.proposals.status("widget", "default")
    assert status.status == "interrupted" and "deactivate again to finish it" in status.detail
    assert crowbar.locks.all() == []
    assert crowbar.proposals.deactivate("widget", "default").status == "deactivated"
    assert holding(chef, names) == 0
