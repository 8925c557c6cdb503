"""Splitting a commit into waves is pure planning (tests/test_plan.py style): no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from barclamp_sdk import CrowbarError
from barclamp_sdk.model.commit.plan import RolloutPlan, rollout_plan, split_waves, wave_batches
from tests.support.widgets import widget_proposal


proposal = widget_proposal


def names(count: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i:02d}.example.com" for i in range(count)]


def test_machines_go_by_the_first_batch_of_element_order_they_hold():
    server = names(1, "s")
    agents = names(5, "a")
    p = proposal(widget_server=server, widget_agent=[*server, *agents])
    batches = wave_batches(p)
    assert batches == {0: server, 1: agents}  # the server also holds an agent: batch 0 only


def test_a_wave_never_spans_two_batches():
    waves = split_waves({0: names(3, "s"), 1: names(7, "a")}, 5)
    assert [(w.number, w.batch, len(w.machines)) for w in waves] == [(1, 0, 3), (2, 1, 5), (3, 1, 2)]
    assert waves[1].machines == tuple(names(7, "a")[:5])


def test_a_machine_leaving_the_proposal_goes_with_the_elements_it_had():
    before = proposal(widget_server=["s.example.com"], widget_agent=["gone.example.com"])
    after = proposal(widget_server=["s.example.com"])
    assert wave_batches(after, before) == {0: ["s.example.com"], 1: ["gone.example.com"]}


@given(st.dictionaries(st.integers(0, 4), st.lists(st.text("abc", min_size=1, max_size=4), unique=True),
                       max_size=5), st.integers(1, 6))
def test_waves_cover_every_machine_once_in_batch_order(batches, size):
    waves = split_waves(batches, size)
    flat = [m for w in waves for m in w.machines]
    assert sorted(flat) == sorted(m for ms in batches.values() for m in ms)
    assert all(1 <= len(w.machines) <= size for w in waves)
    assert [w.batch for w in waves] == sorted(w.batch for w in waves)
    assert [w.number for w in waves] == list(range(1, len(waves) + 1))
    assert all(set(w.machines) <= set(batches[w.batch]) for w in waves)


def test_the_rollout_plan_comes_from_the_document_and_options_override_it():
    p = proposal()
    assert rollout_plan(p) is None
    p.deployment["rollout"] = {"wave": 4, "max_failures": 2, "timeout": 600}
    assert rollout_plan(p) == RolloutPlan(4, 2, 600.0)
    assert rollout_plan(p, wave=10, timeout=30) == RolloutPlan(10, 2, 30.0)
    assert rollout_plan(proposal(), wave=3) == RolloutPlan(3, 1, 3600.0)


def test_a_rollout_that_did_not_finish_is_resumed_with_its_plan():
    p = proposal()
    p.revision = 3
    record = {"revision": 3, "status": "stopped", "plan": {"wave": 5, "max_failures": 2, "timeout": 60.0}}
    p.deployment["crowbar-rollout"] = record
    assert rollout_plan(p) == RolloutPlan(5, 2, 60.0)
    assert rollout_plan(p, wave=2) == RolloutPlan(2, 2, 60.0)
    record["status"] = "done"
    assert rollout_plan(p) is None
    record.update(status="stopped", revision=2)  # an older revision: committed as it says
    assert rollout_plan(p) is None


@pytest.mark.parametrize("options", [{"wave": 0}, {"wave": 2, "max_failures": 0}, {"wave": 2, "timeout": 0},
                                     {"max_failures": 2}])
def test_a_bad_rollout_plan_is_one_clear_error(options):
    with pytest.raises(CrowbarError) as caught:
        rollout_plan(proposal(), **options)
    assert "\n" not in str(caught.value) and ("wave" in str(caught.value))
