"""Retries proven against real faults injected by a loopback proxy."""

from __future__ import annotations

import time

import pytest

from barclamp_sdk.chef import ChefClient, RetryPolicy
from barclamp_sdk.errors import Conflict, ConnectionFailed, ServerError

FAST = RetryPolicy(attempts=6, total_timeout=10, backoff_initial=0.02, backoff_max=0.2)


@pytest.fixture
def proxied(chef_server, chef, fault_proxy):
    proxy = fault_proxy(seed=7)
    client = ChefClient(chef_server.config(server_url=proxy.url, retry=FAST))
    return proxy, client


@pytest.mark.parametrize("kind", ["503", "502", "504", "drop", "drop_after"])
def test_get_survives_transient_faults(proxied, chef, kind):
    proxy, client = proxied
    chef.roles.create({"name": "steady", "description": "ok"})
    proxy.fail_first(3, kind)
    assert client.roles.get("steady")["description"] == "ok"
    assert proxy.faults[kind] == 3
    assert client.stats.snapshot()["attempts"] == 4


def test_put_survives_dropped_connections(proxied, chef):
    proxy, client = proxied
    chef.roles.create({"name": "target"})
    proxy.fail_first(2, "drop")
    client.roles.update("target", {"name": "target", "description": "written"})
    assert chef.roles.get("target")["description"] == "written"


def test_429_honours_retry_after(proxied, chef):
    proxy, client = proxied
    proxy.retry_after = 0.5
    chef.roles.create({"name": "slow"})
    proxy.fail_first(2, "429")
    started = time.monotonic()
    client.roles.get("slow")
    # Backoff alone would wait under 0.1 s in all; Retry-After asks for 0.5 s twice.
    assert time.monotonic() - started >= 1.0


def test_retried_create_whose_first_attempt_landed_is_ours(proxied, chef):
    proxy, client = proxied
    chef.data_bags.create("locks")
    proxy.fail_first(1, "drop_after")  # the server stores it, the answer is lost
    item = {"id": "lock-a", "owner": "me", "token": "t-123"}
    stored = client.data_bags.create_item("locks", item)
    assert stored["owner"] == "me"
    assert proxy.faults["drop_after"] == 1
    assert chef.data_bags.get_item("locks", "lock-a") == item


def test_retried_create_that_finds_someone_elses_object_is_a_conflict(proxied, chef):
    proxy, client = proxied
    chef.data_bags.create("locks")
    chef.data_bags.create_item("locks", {"id": "lock-b", "owner": "other", "token": "t-1"})
    proxy.fail_first(1, "drop")  # first attempt never arrives; the retry gets 409
    with pytest.raises(Conflict) as info:
        client.data_bags.create_item("locks", {"id": "lock-b", "owner": "me", "token": "t-2"})
    assert info.value.retried
    assert chef.data_bags.get_item("locks", "lock-b")["owner"] == "other"


def test_retried_delete_that_already_happened_succeeds(proxied, chef):
    proxy, client = proxied
    chef.roles.create({"name": "doomed"})
    proxy.fail_first(1, "drop_after")
    client.roles.delete("doomed")
    assert chef.roles.find("doomed") is None


def test_a_first_delete_of_nothing_is_still_not_found(proxied):
    _, client = proxied
    with pytest.raises(Exception) as info:
        client.roles.delete("never-existed")
    assert getattr(info.value, "status", None) == 404


def test_permanent_503_fails_within_the_cap(chef_server, chef, fault_proxy):
    proxy = fault_proxy().fail_always("503")
    policy = RetryPolicy(attempts=100, total_timeout=1.5, backoff_initial=0.05, backoff_max=0.3)
    client = ChefClient(chef_server.config(server_url=proxy.url, retry=policy))
    started = time.monotonic()
    with pytest.raises(ServerError) as info:
        client.get("/nodes")
    elapsed = time.monotonic() - started
    assert info.value.status == 503
    assert "injected fault" in str(info.value)
    assert elapsed < policy.total_timeout + 2.0
    assert 3 <= proxy.requests < 100


def test_permanent_outage_fails_with_a_clear_message(chef_server, fault_proxy):
    proxy = fault_proxy().fail_always("drop")
    policy = RetryPolicy(attempts=4, total_timeout=5, backoff_initial=0.01, backoff_max=0.05)
    client = ChefClient(chef_server.config(server_url=proxy.url, retry=policy))
    with pytest.raises(ConnectionFailed) as info:
        client.get("/roles")
    message = str(info.value)
    assert "cannot reach the Chef server" in message and "4 attempts" in message
    assert proxy.requests == 4


def test_read_timeout_is_applied_and_retried(chef_server, chef, fault_proxy):
    proxy = fault_proxy(latency=1.0)
    proxy.fail_first(1, "latency")
    client = ChefClient(chef_server.config(server_url=proxy.url, read_timeout=0.3, retry=FAST))
    assert client.get("/nodes") == {}
    assert proxy.requests == 2
