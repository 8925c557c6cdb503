"""The NTP barclamp on a real Chef server: the plugin gives ``crowbar`` and ``fleet``."""

import pytest

from barclamp_sdk.errors import ValidationError
from ntp_barclamp import Ntp


@pytest.fixture
def barclamps_under_test():
    return [Ntp]


@pytest.fixture
def machines(crowbar, fleet):
    # Each machine is added (as its first chef-client run makes it), booted to
    # discovered, allocated by the operator, and booted on to ready.
    return fleet.ready(3, "compute") + fleet.ready(1, "vm")


def test_servers_on_hardware_clients_everywhere_else(crowbar, machines):
    proposal = crowbar.proposals.create("ntp", "default")
    assert proposal.elements["ntp-server"] == [machines[0]]
    assert sorted(proposal.elements["ntp-client"]) == sorted(machines[1:])
    assert "physical machines first" in proposal.notes[0]


def test_commit_puts_the_roles_on_the_machines(crowbar, machines, fleet):
    crowbar.proposals.create("ntp", "default")
    assert crowbar.proposals.commit("ntp", "default").status == "applied"
    node = fleet.converge(machines[1])     # one chef-client run
    assert node["automatic"]["recipes"] == ["ntp::client"]
    assert node["default"]["ntp"]["external_servers"] == ["0.pool.ntp.org", "1.pool.ntp.org"]


def test_bad_settings_are_refused(crowbar, machines):
    crowbar.proposals.create("ntp", "default")
    with pytest.raises(ValidationError, match="external_servers is empty"):
        crowbar.proposals.set("ntp", "default", {"external_servers": "[]"})
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        crowbar.proposals.set("ntp", "default", {"server_count": "9"})
