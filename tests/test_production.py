"""The production personality (erchef's ways, in front of the real goiardi)
and how the transport copes with each of them."""

from __future__ import annotations

import threading
import time

import pytest

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient, RetryPolicy
from barclamp_sdk.errors import (
    LicenseInvalid,
    NotFound,
    RequestTooLarge,
    ServerError,
    Unauthorized,
    UnsupportedAPIVersion,
)
from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support import figures
from tests.support.widgets import TEST_BARCLAMPS

FAST = RetryPolicy(attempts=8, total_timeout=20, backoff_initial=0.05, backoff_max=0.5)


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def node_names(count, prefix="d52-54-00-00"):
    return [f"{prefix}-{i // 256:02x}-{i % 256:02x}.example.com" for i in range(count)]


def create_nodes(chef, names):
    from barclamp_sdk.model.parallel import run_parallel
    run_parallel(lambda n: chef.nodes.create({"name": n}), names, workers=8, name="seed")


# -- organizations, signing, API version -------------------------------------------------


def test_organization_urls_work_end_to_end(chef, production):
    server = production(lag=0)
    client = server.client()
    client.roles.create({"name": "web", "description": "via org"})
    client.data_bags.create("bag")
    client.data_bags.create_item("bag", {"id": "one", "v": 1})
    assert client.roles.get("web")["description"] == "via org"
    assert chef.roles.get("web")["description"] == "via org"  # the same goiardi behind it
    assert [r["name"] for r in client.search("role", "name:web")] == ["web"]
    assert client.data_bags.get_item("bag", "one")["v"] == 1
    # Every protocol version signs the organization path; the proxy checks it.
    for version in ("1.0", "1.1"):
        assert server.client(sign_version=version).roles.get("web")["name"] == "web"
    path = server.proxy.seen[0][1]
    assert path.startswith("/organizations/crowbar/")


def test_paths_outside_the_organization_are_not_found(chef, production):
    server = production()
    bare = ChefClient(server.upstream.config(server_url=server.proxy.url))
    with pytest.raises(NotFound):
        bare.get("/nodes")
    other = ChefClient(server.upstream.config(server_url=server.proxy.url + "/organizations/other"))
    with pytest.raises(NotFound) as info:
        other.get("/nodes")
    assert "organization 'other' does not exist" in str(info.value)


def test_a_bad_signature_is_refused(chef, production, tmp_path):
    server = production()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    forged = ChefClient(server.config(client_key_path=None, client_key_pem=pem))
    with pytest.raises(Unauthorized) as info:
        forged.get("/nodes")
    assert "Invalid signature for user or client 'admin'" in str(info.value)


def test_api_version_1_is_sent_and_406_is_one_clear_line(chef, production):
    server = production()
    server.client().get("/nodes")
    assert set(server.personality.api_versions) == {"1"}
    future = server.client(server_api_version=3)
    with pytest.raises(UnsupportedAPIVersion) as info:
        future.get("/nodes")
    message = str(info.value)
    assert "\n" not in message and "406" in message
    assert "X-Ops-Server-API-Version 0-2" in message and "server_api_version" in message


def test_an_unlicensed_server_gives_one_clear_line(chef, production):
    server = production(license_invalid=True)
    with pytest.raises(LicenseInvalid) as info:
        server.client().get("/nodes")
    message = str(info.value)
    assert "\n" not in message and "licence" in message and "403" in message


# -- request size --------------------------------------------------------------------------


def test_413_with_erchefs_json_body_is_one_clear_line(chef, production):
    server = production(max_request_size=2000)
    client = server.client(max_request_size=10_000_000)  # not told: the server refuses
    with pytest.raises(RequestTooLarge) as info:
        client.roles.create({"name": "big", "description": "x" * 5000})
    message = str(info.value)
    assert "HTTP 413: JSON must be no more than 2000 bytes." in message and "\n" not in message
    assert chef.roles.find("big") is None


def test_413_with_goiardis_text_body_is_one_clear_line(tmp_path):
    with LocalChefServer(tmp_path / "small", extra_args=("-j", "2000")) as server:
        client = server.client(max_request_size=10_000_000)
        with pytest.raises(RequestTooLarge) as info:
            client.roles.create({"name": "big", "description": "x" * 5000})
    assert "HTTP 413: Content-length too long!" in str(info.value)


def test_bodies_over_the_limit_are_refused_before_sending(chef, production):
    server = production()
    client = server.client()
    sent = server.proxy.requests
    with pytest.raises(RequestTooLarge) as info:
        client.roles.update("crowbar-big", {"name": "crowbar-big", "description": "x" * 1_000_000})
    message = str(info.value)
    assert "role crowbar-big is 1,000,0" in message and "limit of 1,000,000 bytes" in message
    assert "nothing was sent" in message and "\n" not in message
    chef.data_bags.create("crowbar")
    with pytest.raises(RequestTooLarge) as info:
        client.data_bags.create_item("crowbar", {"id": "bc-nova-default", "blob": "y" * 1_000_000})
    assert "data bag item crowbar/bc-nova-default is 1,000,0" in str(info.value)
    assert server.proxy.requests == sent


# -- load ------------------------------------------------------------------------------------


def test_503_over_the_concurrency_cap_is_retried(chef, production):
    gate = threading.Event()
    server = production(max_in_flight=2, hold=gate)
    chef.roles.create({"name": "steady"})
    held = [server.client(retry=FAST) for _ in range(2)]
    results = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.roles.get("steady")["name"]))
               for c in held]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: server.personality.in_flight == 2)
        third = server.client(retry=FAST)
        done = []
        waiter = threading.Thread(target=lambda: done.append(third.roles.get("steady")["name"]))
        waiter.start()
        assert wait_until(lambda: server.personality.refused.get("503", 0) >= 1)
    finally:
        gate.set()
    for thread in [*threads, waiter]:
        thread.join(30)
    assert results == ["steady", "steady"] and done == ["steady"]
    assert third.stats.snapshot()["attempts"] >= 2


# -- search ----------------------------------------------------------------------------------


def test_search_lags_writes_made_through_the_proxy(chef, production):
    server = production(lag=3.0)
    client = server.client()
    client.nodes.create({"name": "fresh", "normal": {"v": 1}})
    chef.nodes.create({"name": "old", "normal": {"v": 1}})  # written behind the proxy: no lag
    started = time.monotonic()
    keys = {"v": ["v"]}
    assert [r["name"] for r in client.search("node", "*:*")] == ["old"]  # fresh is not indexed yet
    assert client.nodes.get("fresh")["normal"]["v"] == 1  # the object endpoint has it at once
    client.nodes.update("old", {"name": "old", "normal": {"v": 2}})
    assert list(client.partial_search("node", "name:old", keys)) == [{"v": 1}]  # previous version
    client.nodes.delete("old")
    assert [r["name"] for r in client.search("node", "name:old")] == ["old"]  # still shown
    assert time.monotonic() - started < 3.0, "machine too slow for this test's 3 s lag"
    assert wait_until(lambda: sorted(r["name"] for r in client.search("node", "*:*")) == ["fresh"])
    assert time.monotonic() - started >= 3.0


def test_search_order_is_not_by_name_and_total_is_capped(chef, production):
    server = production(window=20, lag=0)
    names = node_names(30)
    create_nodes(chef, names)
    client = server.client()
    page = client.get("/search/node", params={"q": "*:*", "start": 0, "rows": 20, "sort": "name asc"})
    got = [r["name"] for r in page["rows"]]
    assert page["total"] == 20 and len(got) == 20 and got != sorted(got)
    with pytest.raises(ServerError) as info:
        client.get("/search/node", params={"q": "*:*", "start": 10, "rows": 11})
    assert "internal search error" in str(info.value)
    assert server.personality.refused["window"] == 1


@pytest.mark.parametrize("told", [False, True])
def test_paging_past_a_small_window_returns_every_item_once(chef, production, told):
    server = production(window=50, lag=0)
    names = node_names(120)
    create_nodes(chef, names)
    client = server.client(**({"search_window": 50} if told else {}))
    before = client.stats.snapshot()["by_endpoint"].get("GET /search/*", 0)
    rows = [r["name"] for r in client.search("node", "*:*")]
    searches = client.stats.snapshot()["by_endpoint"].get("GET /search/*", 0) - before
    assert sorted(rows) == sorted(names)
    partial = [r["n"] for r in client.partial_search("node", "name:d52-*", {"n": ["name"]})]
    assert sorted(partial) == sorted(names)
    assert client.search_window.limit <= 50
    figures.record(f"search_requests_120_nodes_window_50_{'told' if told else 'learned'}", searches)


def test_a_server_that_ignores_ranges_is_partitioned_by_prefix(chef, production):
    server = production(window=40, lag=0, ranges=False)  # as goiardi --pg-search does
    names = node_names(150) + ["alpha", "beta", "b.x", "zeta"]
    create_nodes(chef, names)
    client = server.client()
    rows = [r["n"] for r in client.partial_search("node", "*:*", {"n": ["name"]})]
    assert sorted(rows) == sorted(names)
    assert client.search_window.ranges is False


def test_data_bag_search_partitions_by_id(chef, production):
    server = production(window=10, lag=0)
    chef.data_bags.create("crowbar_history")
    for i in range(35):
        chef.data_bags.create_item("crowbar_history", {"id": f"nova-default-{i}", "proposal": "bc-nova-default"})
    client = server.client(search_window=10)
    ids = [r["raw_data"]["id"] for r in client.search("crowbar_history", "proposal:bc-nova-default")]
    assert sorted(ids) == sorted(f"nova-default-{i}" for i in range(35))


def test_inventory_of_more_machines_than_the_window(chef, production):
    server = production(window=30, lag=0)
    fleet = Fleet(chef, crowbar=Crowbar(chef, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET))
    names = fleet.add(80, "compute", clients=False)
    fleet.boot(names)  # discovered: each machine now has its crowbar role
    crowbar = Crowbar(server.client(), barclamps=TEST_BARCLAMPS, secret=TEST_SECRET)
    inventory = crowbar.machines.inventory()
    assert sorted(m.name for m in inventory) == sorted(names)
    assert len(crowbar.machines.cluster()) == 80
    assert server.personality.refused.get("window", 0) >= 1  # it was never told the window


def lagging_crowbar(chef, production, lag: float = 30.0):
    """A Crowbar on a production proxy whose search lags ``lag`` s: longer than the test, so
    every read-after-write below happens inside the lag (never a race against a timer)."""
    server = production(lag=lag)
    crowbar = Crowbar(server.client(), barclamps=TEST_BARCLAMPS, secret=TEST_SECRET)
    return server, crowbar, Fleet(crowbar.chef, crowbar=crowbar)


def test_a_proposal_just_created_is_listed_committed_shown_in_history_and_diffed(chef, production):
    server, crowbar, fleet = lagging_crowbar(chef, production)
    names = fleet.ready(3, "compute", clients=False)  # discovered, allocated and booted within the lag
    assert sorted(crowbar.machines.cluster().names()) == sorted(names)
    crowbar.proposals.create("widget", "default")
    assert [p["name"] for p in crowbar.proposals.list("widget")] == ["default"]
    crowbar.proposals.set("widget", "default", {"port": "9001"})
    assert [h["revision"] for h in crowbar.proposals.history("widget", "default")] == [1, 2]
    result = crowbar.proposals.commit("widget", "default")
    assert result.status == "applied" and result.machines_written == 3
    assert crowbar.proposals.status("widget", "default").status == "ready"
    assert crowbar.proposals.diff("widget", "default").changes == []
    assert crowbar.proposals.commit("widget", "default").status == "unchanged"
    assert all("widget-agent" in crowbar.machines.record(n).entries for n in names)
    assert server.personality.lag >= 30  # all of it happened before search showed any of it


def test_a_proposal_queued_then_dequeued_within_the_lag(chef, production):
    server, crowbar, fleet = lagging_crowbar(chef, production)
    names = fleet.add(2, "compute", clients=False)
    fleet.boot(names)  # paused at discovered: a commit must wait
    crowbar.proposals.create("widget", "default")
    result = crowbar.proposals.commit("widget", "default")
    assert result.status == "queued" and "waiting for allocation" in " ".join(result.reasons)
    assert [(i["barclamp"], i["inst"]) for i in crowbar.queue.items()] == [("widget", "default")]
    assert crowbar.proposals.status("widget", "default").status == "pending"
    assert all("widget-default" in crowbar.machines.record(n).pending for n in names)
    crowbar.proposals.dequeue("widget", "default")
    assert crowbar.queue.items() == []
    assert all(not crowbar.machines.record(n).pending for n in names)  # the marks are gone too
    assert crowbar.proposals.status("widget", "default").status == "hold"
