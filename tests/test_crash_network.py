"""A crash at every step over the network barclamp: discovery allocation and a renumbering.

Discovery (admin and bmc addresses) and a renumbering (the network proposal's
storage range edited, then committed: the machines move in waves) are each
killed after every write k and run again; the end must be that of an
undisturbed run, also with another operator's command between the kill and
the rerun. The state compared includes every address item and every role's
``crowbar.network`` (so no address is in use twice after any rerun: the
undisturbed end has none, see :func:`undisturbed_has_no_double`).
"""

from __future__ import annotations

import time

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.model.addresses import NetworkSpec
from barclamp_sdk.testing.crashsteps import crash_at_every_step
from barclamp_sdk.testing.fleet import Fleet
from tests.support import figures
from tests.support.widgets import TEST_BARCLAMPS, Storer

DISCOVER = ["-", "-", "discover"]
#: The storage range moved half onto itself: some machines keep their address, the others move into it.
RENUMBER = ["network", "default", "renumber", "networks.storage.ranges.host.start=192.168.125.14",
            "networks.storage.ranges.host.end=192.168.125.23"]


def nodes_to_discover(crowbar: Crowbar) -> None:
    """The network proposal committed, two physical machines (admin and bmc each) and a virtual one (admin)."""
    crowbar.proposals.create("network", "default")
    assert crowbar.proposals.commit("network", "default").status == "applied"
    fleet = Fleet(crowbar.chef, crowbar=crowbar)
    fleet.add(2, "compute", clients=False)
    fleet.add(1, "vm", clients=False)


def storage_to_renumber(crowbar: Crowbar) -> None:
    """Four machines holding every storage address of .12-.15 (the edit moves the range to .14-.23:
    two keep theirs, two move), a fifth without."""
    crowbar.proposals.create("network", "default")
    crowbar.proposals.set("network", "default", {"networks.storage.ranges.host.start": "192.168.125.12",
                                                 "networks.storage.ranges.host.end": "192.168.125.15"})
    assert crowbar.proposals.commit("network", "default").status == "applied"
    names = Fleet(crowbar.chef, crowbar=crowbar).add(5, "vm", clients=False)
    crowbar.machines.discover(names)
    for name in names[:4]:
        assert crowbar.addresses.allocate("storage", [name], user="storer-default").allocated
    plan = crowbar.addresses.renumber_plan("storage", NetworkSpec.parse("storage", {
        **crowbar.proposals.get("network", "default").attributes["networks"]["storage"],
        "ranges": {"host": {"start": "192.168.125.14", "end": "192.168.125.23"}}}))
    assert len(plan) == 2, plan  # the setup itself is checked: a renumbering that moves nothing proves nothing


def storage_to_claim(crowbar: Crowbar) -> None:
    """Five ready machines (one with a storage address already) in a storer proposal, whose
    element needs the storage network."""
    names = Fleet(crowbar.chef, crowbar=crowbar).ready(5, "compute")
    crowbar.proposals.create("network", "default")  # after the machines: the same addresses in every setup
    assert crowbar.proposals.commit("network", "default").status == "applied"
    assert crowbar.addresses.allocate("storage", names[:1], user="storer-default").allocated
    crowbar.proposals.create("storer", "default")
    crowbar.proposals.set("storer", "default", {"elements.storer-server": ",".join(names)})


#: The child's commit through the search snapshot (the speculative pass, as with many machines).
SNAPSHOT_PATH = {"CRASHSTEPS_DIRECT_READ_LIMIT": "0"}

#: name: (setup, action, another operator's command, the child's environment).
OPERATIONS = {
    "discovery of 3 machines": (nodes_to_discover, DISCOVER, DISCOVER, {}),
    "renumbering of 4 machines": (storage_to_renumber, RENUMBER,
                                  ["-", "-", "allocate", "network=storage", "user=storer-default"], {}),
    # Addresses claimed ahead of the role reads (the speculative pass), then written with the roles.
    "commit of 5 machines claiming addresses": (storage_to_claim, ["storer", "default", "commit"],
                                                ["-", "-", "allocate", "network=storage",
                                                 "user=storer-default"], SNAPSHOT_PATH),
}


@pytest.fixture
def barclamps_under_test():
    return [*TEST_BARCLAMPS, Storer]


@pytest.mark.parametrize("after", ["the same command", "another operator's command"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_network_killed_after_any_write_then_run_again_ends_as_undisturbed(operation, after, chef_server,
                                                                          crowbar_env, crowbar_clients):
    setup, action, other, child_env = OPERATIONS[operation]
    client, fresh = crowbar_clients

    started = time.monotonic()
    report = crash_at_every_step(fresh, setup, action, {**crowbar_env, **child_env},
                                 other=other if after != "the same command" else None,
                                 snapshot=chef_server.database_snapshot(), client=client)
    print(f"{operation}, then {after}: {report.steps} of {report.writes} steps tried, "
          f"{len(report.mismatches)} mismatches, {time.monotonic() - started:.0f}s")
    print("\n".join(f"  {k}. {m} {p}" for k, (m, p) in enumerate(report.requests, 1)))
    print("\n".join(report.mismatches))
    figures.record("crash_network_steps_tried", report.steps)
    figures.record("crash_network_mismatches", len(report.mismatches))
    assert report.steps == report.writes > 0
    assert report.mismatches == []
