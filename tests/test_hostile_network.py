"""Hostile network layouts and commands: one clear line, nothing written, never a traceback."""

from __future__ import annotations

import pytest

from barclamp_sdk.testing.snapshot import server_snapshot

def _edit(cli, *pairs, expect):
    return cli("network", "proposal", "edit", "default", *[a for p in pairs for a in ("--set", p)], expect=expect)


@pytest.mark.parametrize("pairs, says", [
    # Each crashed with a TypeError or ValueError (mixed IPv4/IPv6 comparisons, an
    # unparsed router on a shared segment, a conduit pattern that is no regex).
    (["networks.storage.ranges.host.start=fd00::10", "networks.storage.ranges.host.end=fd00::20"], "is not IPv4"),
    (["networks.storage.router=fd00::1"], "storage"),
    (["networks.storage.router=x", "networks.storage.share_segment_with=[\"admin\"]"], "router 'x' is not an address"),
])
def test_hostile_layouts_are_refused_in_one_line_and_write_nothing(cli, chef, pairs, says):
    cli("network", "proposal", "create", "default")
    before = server_snapshot(chef)
    _, err = _edit(cli, *pairs, expect=1)
    assert says in err and "Traceback" not in err, err
    assert server_snapshot(chef) == before


def test_a_conduit_pattern_that_is_no_regular_expression_is_refused(crowbar, chef):
    crowbar.proposals.create("network", "default")
    document = crowbar.proposals.get("network", "default")
    data = document.data
    data["attributes"]["network"]["conduit_map"][0]["pattern"] = "team/("
    before = server_snapshot(chef)
    with pytest.raises(Exception) as caught:
        crowbar.proposals.replace("network", "default", data)
    assert "is not a regular expression" in str(caught.value)
    assert server_snapshot(chef) == before


def test_freeing_an_address_on_a_network_nobody_committed_says_so(cli, fleet):
    """It printed "had no nosuchnet address: nothing to do" and exited 0."""
    name = fleet.ready(1, "compute")[0]
    _, err = cli("network", "free", name, "nosuchnet", expect=1)
    assert "no network 'nosuchnet'" in err and "Traceback" not in err, err
