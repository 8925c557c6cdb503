"""Crowbar admins find Crowbar's attribute keys: >= 80 % at the same path, the rest documented.

Measured by bench/crowbar_keys.py against Dell's Crowbar templates in
``shared/reference`` beside the repository (CI has a copy there).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
DOC = ROOT / "docs" / "reference.md"


def _load():
    spec = importlib.util.spec_from_file_location("crowbar_keys", ROOT / "bench" / "crowbar_keys.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("crowbar_keys", module)
    spec.loader.exec_module(module)
    return module


keys = _load()


@pytest.fixture(scope="module")
def results():
    if not (REFERENCE / "crowbar-templates").is_dir():
        pytest.fail(f"Crowbar's templates are missing: {REFERENCE / 'crowbar-templates'} does not exist; "
                    "put a copy of shared/reference beside the repository clone")
    return keys.measure(REFERENCE)


def by_release(results):
    return {(r.barclamp, r.release): r for r in results}


@pytest.mark.parametrize("barclamp,release", [
    ("nova", "fred"), ("nova", "mesa-1.6"), ("swift", "fred"), ("swift", "mesa-1.6"),
    ("ceph", "hydrogen"), ("ceph", "pebbles")])
def test_at_least_80_percent_of_meaningful_keys_are_at_crowbars_path(results, barclamp, release):
    measured = by_release(results)[(barclamp, release)]
    assert measured.meaningful >= 6  # the template was read, not an empty subtree
    missing = [k.path for k in measured.keys if k.meaningful and k.status != "same"]
    assert measured.same_path_pct >= 80.0, f"{barclamp}@{release}: {measured.same_path_pct:.0f}%, not at the same path: {missing}"


def test_every_release_of_the_promise_is_measured(results):
    measured = by_release(results)
    for barclamp, releases in keys.PROMISED.items():
        for release in releases:
            assert (barclamp, release) in measured
    assert {r.barclamp for r in results} == {"nova", "swift", "ceph", "eqlx"}


def test_every_key_not_at_the_same_path_is_explained_and_replacements_exist(results):
    templates = keys.project_templates()
    from barclamps.ceph import Ceph
    from barclamps.eqlx import Eqlx
    from barclamps.nova import Nova
    from barclamps.swift import Swift

    elements = {b.name: {e.name for e in b.elements} for b in (Nova(), Swift(), Ceph(), Eqlx())}
    for r in results:
        for k in r.keys:
            assert k.status != "unexplained", f"{r.barclamp}@{r.release}: {k.path} is neither at the same path nor explained"
            if k.status == "replaced":
                target = re.match(r"replaced: `([^`]+)`", k.why)
                assert target, f"{r.barclamp} {k.path}: a replacement names the project setting first"
                name = target.group(1)
                assert keys.has_path(templates[r.barclamp], name) or name in elements[r.barclamp], (
                    f"{r.barclamp} {k.path}: the replacement {name} is not a setting or element of the project")
            if k.status == "same":
                assert (r.barclamp, k.path) not in keys.EXPLAINED, f"{k.path} is at the same path now: drop its entry"


def test_reference_doc_has_the_figures_and_every_key_not_at_the_same_path(results):
    doc = DOC.read_text()
    lines = set(doc.splitlines())
    generated = keys.markdown(results).splitlines()
    absent = [line for line in generated if line and line not in lines]
    assert not absent, ("docs/reference.md is behind: regenerate with `python bench/crowbar_keys.py --markdown`; "
                        f"missing lines: {absent[:5]}")
    for r in results:
        for k in r.keys:
            if k.status != "same":
                assert f"| {r.barclamp} | `{k.path}` |" in doc


def test_missing_reference_is_a_clear_error(tmp_path, capsys):
    assert keys.main(["--reference", str(tmp_path)]) == 1
    assert "Crowbar's templates are not in" in capsys.readouterr().err
