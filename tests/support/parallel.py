"""How the suite runs on pytest-xdist workers (``./dev test`` with no arguments).

Each worker is its own pytest session with its own servers: the session
fixtures start a goiardi and a private PostgreSQL cluster per worker, under
the worker's own temporary directory (``popen-gwN``), and the BMC peers take
ports from the worker's share (:func:`barclamp_sdk.testing.bmcpeers.fresh_port`).

Scheduling (``--dist loadgroup --no-loadscope-reorder``): a module with a
fixture of module or class scope goes to one worker whole (its tests share
that fixture); every other test is a work unit of its own, so the heavy
parametrized files spread over the workers. The units go out heaviest first
(:data:`HEAVY_FIRST`), so that no long test starts last and runs alone.
The groups ride on xdist's node id suffix, which pytest 9.2 no longer takes
(pytest-xdist issue 1386): pyproject.toml keeps pytest below 9.2, and
tests/test_parallel_schedule.py fails if grouping stops.

The reliability figures (:mod:`tests.support.figures`) are counted in the
workers, sent to the controller with each worker's output and written once,
by the controller, with every worker's test outcomes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import figures

#: Test files by what they cost in a serial run, heaviest first (seconds, 2 shared CPUs, 2026-12-02);
#: their tests are handed out before the rest, which keeps the order of collection.
HEAVY_FIRST = (
    "test_crash_steps.py",  # 686 s (every k of every operation)
    "test_scale_documents.py",  # 172
    "test_faults.py",  # 140
    "test_interrupt.py",  # 108
    "test_soak.py",  # 107
    "test_fuzz_cli.py",  # 92
    "test_concurrency.py",  # 84
    "test_network.py",  # 79
)
#: Fixture scopes whose value tests of one module share.
_SHARED_SCOPES = frozenset({"module", "class", "package"})


def distributed(config: pytest.Config) -> bool:
    """Whether this session runs tests for an xdist controller (is a worker)."""
    return hasattr(config, "workerinput")


def shares_module_fixtures(item: pytest.Item) -> bool:
    """Whether ``item`` uses a fixture of module, class or package scope (shared with its neighbours)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True  # unknown: keep the module together, which is always safe
    return any(definition.scope in _SHARED_SCOPES
               for definitions in info.name2fixturedefs.values() for definition in definitions)


def _weight(item: pytest.Item) -> int:
    name = item.path.name
    return HEAVY_FIRST.index(name) if name in HEAVY_FIRST else len(HEAVY_FIRST)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group marks into nodeid suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not distributed(config):
        return
    grouped = {item.path for item in items if shares_module_fixtures(item)}
    for item in items:
        if item.path in grouped:
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    items.sort(key=_weight)  # stable: the order of collection within a weight


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands its figures to the controller (see :func:`pytest_testnodedown`)."""
    if distributed(session.config):
        session.config.workeroutput["figures"] = figures.counts()  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object | None) -> None:
    """The controller adds up each worker's figures as the worker finishes."""
    figures.merge(getattr(node, "workeroutput", {}).get("figures", {}))
