"""Secrets change atomically with the document that refers to them.

A refused, failed or losing command leaves every secret as it was and no
orphan items; old versions are collected once nothing refers to them.
"""

from __future__ import annotations

from typing import Any

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import CrowbarError, ValidationError
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.pause import Paused


def referenced_items(data: Any) -> set[str]:
    """Items of crowbar_secrets that references anywhere in ``data`` point at."""
    if isinstance(data, dict):
        if set(data) == {"data_bag", "item", "key"}:
            return {data["item"]} if data["data_bag"] == "crowbar_secrets" else set()
        return set().union(*map(referenced_items, data.values()))
    if isinstance(data, list):
        return set().union(*map(referenced_items, data))
    return set()


def password(crowbar: Crowbar) -> str:
    return crowbar.secrets.get(crowbar.proposals.get("widget", "default").attributes["password"])


def referenced(crowbar: Crowbar, chef: ChefClient) -> set[str]:
    """Secret items the document and its config role refer to."""
    found = referenced_items(crowbar.proposals.get("widget", "default").data)
    return found | referenced_items(chef.roles.find("widget-config-default") or {})


def test_a_failed_document_write_leaves_the_secrets_as_they_were(crowbar, chef, fault_proxy,
                                                                   barclamps_under_test):
    crowbar.proposals.create("widget", "default", settings={"password": "first"}, from_inventory=False)
    items = crowbar.secrets.items()
    proxy = fault_proxy()
    through = Crowbar(ChefClient(chef.config.with_options(server_url=proxy.url)),
                      barclamps=barclamps_under_test, secret=TEST_SECRET)
    proxy.fail_matching("PUT", "/data/crowbar/bc-widget-default", "413")
    with pytest.raises(CrowbarError):
        through.proposals.set("widget", "default", {"password": "second"})
    assert proxy.faults["413"] == 1
    assert crowbar.proposals.get("widget", "default").revision == 1
    assert password(crowbar) == "first"
    assert crowbar.secrets.items() == items  # no orphan version


def test_racing_creates_leave_the_winners_password_under_the_winners_proposal(
        crowbar, chef, monkeypatch, barclamps_under_test):
    winner = Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)
    paused = Paused(crowbar, monkeypatch, method="find")  # the loser checked: no such proposal yet
    paused.start(lambda: crowbar.proposals.create("widget", "default", settings={"password": "loser"},
                                                  from_inventory=False))
    winner.proposals.create("widget", "default", settings={"password": "winner"}, from_inventory=False)
    with pytest.raises(ValidationError, match="already exists"):
        paused.finish()
    assert password(winner) == "winner"
    # History revision 1 is the winner's document, not overwritten by the loser.
    assert winner.proposals.revision("widget", "default", 1).data == winner.proposals.get("widget", "default").data
    assert set(winner.secrets.items()) == referenced(winner, chef)  # the loser left nothing


def test_old_versions_are_collected_once_nothing_refers_to_them(crowbar, fleet, chef):
    fleet.ready(2, "compute")
    crowbar.proposals.create("widget", "default")
    assert password(crowbar) == "generated-default"
    crowbar.proposals.set("widget", "default", {"password": "second"})
    assert set(crowbar.secrets.items()) == referenced(crowbar, chef) and len(crowbar.secrets.items()) == 1
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    applied = referenced_items(chef.roles.get("widget-config-default"))
    # A new password: the applied config role still refers to the old version, so it stays.
    crowbar.proposals.set("widget", "default", {"password": "third"})
    assert password(crowbar) == "third"
    assert set(crowbar.secrets.items()) == referenced(crowbar, chef) and applied <= set(crowbar.secrets.items())
    (old_item,) = applied
    assert crowbar.secrets.get({"data_bag": "crowbar_secrets", "item": old_item, "key": "password"}) == "second"
    assert crowbar.proposals.commit("widget", "default").status == "applied"
    assert set(crowbar.secrets.items()) == referenced(crowbar, chef) and len(crowbar.secrets.items()) == 1
    crowbar.proposals.deactivate("widget", "default")
    crowbar.proposals.delete("widget", "default")
    assert crowbar.secrets.items() == []
