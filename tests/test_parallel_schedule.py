"""The suite's scheduling on xdist workers (tests/support/parallel.py) really groups what it says.

A module whose tests share a fixture of module scope must run whole on one
worker, or each worker builds the fixture again (the fault suite's 200-machine
server took about 4 minutes per worker in CI) and, worse, a worker that runs
tests of another module in between tears it down and builds it once more.
pytest 9.2 with pytest-xdist 3.8 silently stopped grouping (pytest-xdist
issue 1386: the group rides on a node id suffix that pytest 9.2 no longer
takes); this test runs a real two-worker session and fails if grouping stops.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SHARED = '''
import os, pytest

@pytest.fixture(scope="module")
def built():
    with open(os.environ["BUILT_LOG"], "a") as log:
        log.write(os.environ.get("PYTEST_XDIST_WORKER", "?") + "\\n")
    return 1

@pytest.mark.parametrize("i", range(8))
def test_shared(built, i):
    assert built == 1
'''

SPREAD = '''
import pytest, time

@pytest.mark.parametrize("i", range(8))
def test_spread(i):
    time.sleep(0.2)
'''


def test_a_module_sharing_a_module_fixture_runs_whole_on_one_worker_and_others_spread(pytester, monkeypatch):
    pytester.makepyfile(test_shared=SHARED, test_spread=SPREAD)
    built = pytester.path / "built.log"
    monkeypatch.setenv("BUILT_LOG", str(built))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = pytester.runpytest_subprocess("-p", "tests.support.parallel", "-p", "no:cacheprovider", "-v",
                                           "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder")
    result.assert_outcomes(passed=16)
    workers: dict[str, set[str]] = {"test_shared": set(), "test_spread": set()}
    for line in result.outlines:
        found = re.match(r"\[(gw\d)\] .*PASSED (test_shared|test_spread)\.py::", line)
        if found:
            workers[found.group(2)].add(found.group(1))
    assert len(workers["test_shared"]) == 1, result.outlines  # the whole module on one worker
    assert built.read_text().split() == sorted(workers["test_shared"]), built.read_text()  # built once
    assert workers["test_spread"] == {"gw0", "gw1"}, result.outlines  # independent tests spread
