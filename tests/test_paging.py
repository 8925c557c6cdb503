"""Search partitioning past the window, for any set of names and any window
(barclamp_sdk.chef.paging), against the real server through the production
personality (order not by name, ``total`` capped, ``start + rows`` past the
window refused)."""

from __future__ import annotations

import string
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from barclamp_sdk.chef.paging import MATCH_ALL, _Bucket
from barclamp_sdk.model.parallel import run_parallel

# Names that share prefixes (where partitions must go deep), with the characters Chef allows.
# Lower case only: goiardi 0.11 on PostgreSQL leaves some mixed-case names (``b.a-UdfP``)
# out of every search, even ``*:*``, whatever the client asks. A letter or digit in the
# first two characters: goiardi --pg-search answers everything for a prefix without one
# (``name:_*``), so past its window it cannot list names like ``_`` or ``_.a`` (paging.py).
_CHARACTERS = string.ascii_lowercase + string.digits + "_.:-"
_PIECES = st.sampled_from(["d52-54-00-", "a", "b.", "0", "_", "x:", "-", "zz", "q9"])
_NAMES = st.lists(
    st.lists(st.one_of(_PIECES, st.text(_CHARACTERS, min_size=1, max_size=3)), min_size=1, max_size=4)
    .map("".join).filter(lambda n: not n.startswith("-") and any(c.isalnum() for c in n[:2])),
    max_size=30, unique=True)


@pytest.fixture(scope="module")
def server(chef_server):
    from barclamp_sdk.testing.pytest_plugin import start_production
    proxy = start_production(chef_server, lag=0, window=8)
    yield proxy
    proxy.stop()


@settings(max_examples=15, deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=_NAMES, window=st.integers(min_value=1, max_value=8), told=st.booleans())
def test_every_node_once_for_any_names_and_window(chef_server, server, names, window, told):
    chef = chef_server.client
    chef_server.reset()
    run_parallel(lambda n: chef.nodes.create({"name": n}), names, workers=8, name="seed")
    _wait_searchable(chef, names)
    server.personality.forget()
    server.personality.window = window
    client = server.client(**({"search_window": window} if told else {}))
    try:
        found = [row["n"] for row in client.partial_search("node", MATCH_ALL, {"n": ["name"]})]
        assert sorted(found) == sorted(names)
        # A query of its own (joined with the partition clauses).
        assert sorted(r["name"] for r in client.search("node", "chef_environment:_default")) == sorted(names)
    finally:
        client.close()


def test_data_bag_items_past_a_window_of_one(chef, production):
    server = production(lag=0, window=1)
    chef.data_bags.create("things")
    ids = ["a", "a-b", "a-b-c", "ab", "b", "b_1", "x.y", "0"]
    for item in ids:
        chef.data_bags.create_item("things", {"id": item, "kind": "thing"})
    client = server.client()
    found = [r["raw_data"]["id"] for r in client.search("things", "kind:thing")]
    assert sorted(found) == sorted(ids)


def test_a_match_all_partition_asks_only_for_names():
    # goiardi's PostgreSQL search joins every indexed attribute for "(*:*) AND name:P*".
    bucket = _Bucket("prefix", "d52-", minus=("d52-1",))
    assert bucket.query(MATCH_ALL, "name") == "name:d52-* AND (NOT name:d52-1*)"
    assert bucket.query("roles:x", "name") == "(roles:x) AND name:d52-* AND (NOT name:d52-1*)"


@given(names=st.lists(st.text(string.ascii_lowercase[:3] + "-", min_size=1, max_size=4), unique=True),
       prefix=st.text(string.ascii_lowercase[:3], max_size=2), seen=st.lists(st.integers(0, 50), max_size=8))
def test_a_split_covers_its_bucket_exactly(names, prefix, seen):
    """Whatever names a full page showed, a bucket's children hold exactly its names."""
    bucket = _Bucket("prefix", prefix, minus=(prefix + "a",) if prefix else ())
    values = [names[i % len(names)] for i in seen] if names else []
    children = bucket.split(values, ranges=False)
    assert children
    mine = {n for n in names if n.startswith(prefix) and not any(n.startswith(e) for e in bucket.minus)}
    for name in mine:
        holders = [c for c in children if _holds_exactly(c, name)]
        assert len(holders) >= 1, (name, [(c.kind, c.low, c.minus) for c in children])
    for child in children:
        assert all(n in mine for n in names if _holds_exactly(child, n))
        # Progress: one name, a longer prefix, or without some of the names seen.
        shown = {v for v in values if v in mine}
        assert child.kind == "exact" or len(child.low or "") > len(prefix) or any(
            not _holds_exactly(child, v) for v in shown)


def _holds_exactly(bucket, name):
    if bucket.kind == "exact":
        return name == bucket.low
    return name.startswith(bucket.low or "") and not any(name.startswith(e) for e in bucket.minus)


def _wait_searchable(chef, names, timeout=60.0):
    """Until goiardi's search index holds every node: ``*:*`` reads its object table, so
    wait_indexed (which asks ``*:*``) cannot tell; a query on a field can."""
    deadline = time.monotonic() + timeout
    while {r["name"] for r in chef.search("node", "chef_environment:_default")} != set(names):
        assert time.monotonic() < deadline, "goiardi did not index the nodes"
        time.sleep(0.2)
