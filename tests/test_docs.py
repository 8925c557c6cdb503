"""The Python API reference (mkdocs.yml, docs/api/): it builds without a warning,
every name it documents imports, it covers the public API, and its tables match the code."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import barclamp_sdk
import barclamp_sdk.testing
from barclamp_sdk.testing.fleet import PROFILES, HardwareProfile

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"
DIRECTIVE = re.compile(r"^::: (\S+)\s*$", re.MULTILINE)


def documented() -> list[str]:
    """Every dotted name a ``::: name`` directive of the reference documents."""
    names = [name for page in sorted(API.glob("*.md")) for name in DIRECTIVE.findall(page.read_text())]
    assert names, "no mkdocstrings directives found under docs/api"
    return names


def resolve(dotted: str) -> object:
    """Import ``dotted`` as a user would: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_the_api_reference_builds_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "WARNING" not in output, output
    page = (tmp_path / "site" / "api" / "proposals" / "index.html").read_text()
    assert "barclamp_sdk.Proposal" in page and "elements.ceph-osd" in page  # rendered from the docstrings
    assert ":meth:" not in page and ":class:" not in page  # reST roles shown as code, not literally


@pytest.mark.parametrize("name", documented())
def test_every_documented_name_imports(name):
    assert resolve(name) is not None


def test_the_reference_covers_the_public_api():
    names = set(documented())
    public = {f"barclamp_sdk.{n}" for n in barclamp_sdk.__all__}
    public |= {f"barclamp_sdk.testing.{n}" for n in barclamp_sdk.testing.__all__}
    assert sorted(public - names) == []
    for service in ("proposals.Proposals", "machines.Machines", "queue.Queue", "secrets.SecretStore"):
        assert f"barclamp_sdk.model.{service}" in names
    for fixture in ("chef_server", "chef", "crowbar", "fleet", "crowbar_env", "crowbar_cli", "barclamps_under_test"):
        assert f"barclamp_sdk.testing.pytest_plugin.{fixture}" in names


def profile_row(profile: HardwareProfile) -> str:
    groups: list[tuple[list[str], int, str]] = []
    for disk in profile.disks:
        kind = "HDD" if disk.rotational else "SSD"
        if groups and groups[-1][1:] == (disk.size_gb, kind):
            groups[-1][0].append(disk.name)
        else:
            groups.append(([disk.name], disk.size_gb, kind))
    disks = ", ".join(f"{names[0] if len(names) == 1 else names[0] + '-' + names[-1]}: {len(names)} × {size} GB {kind}"
                      for names, size, kind in groups)
    return (f"| `{profile.name}` | {profile.manufacturer} {profile.product} | {profile.sockets} × "
            f"{profile.cores_per_socket} | {profile.memory_gb} GiB | {disks} | {profile.disks[0].name} | "
            f"{'yes' if profile.bmc else 'no'} |")


def test_the_hardware_profiles_table_matches_the_simulated_fleet():
    page = (API / "testing.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert rows == [profile_row(p) for p in PROFILES.values()]


def test_the_readme_links_the_reference():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/api/index.md)" in readme and "./dev docs" in readme


def test_the_author_guide_script_runs_as_written(chef, monkeypatch, capsys):
    """The guide's "From a script" block, run against the real server with the ntp example."""
    from barclamp_sdk.api import Crowbar
    from barclamp_sdk.testing.fleet import Fleet
    from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

    monkeypatch.syspath_prepend(str(ROOT / "examples" / "ntp"))
    from ntp_barclamp import Ntp

    guide = (ROOT / "docs" / "barclamp-author.md").read_text()
    block = guide.split("From a script, the same steps as the CLI:\n\n```python\n", 1)[1].split("```", 1)[0]
    crowbar = Crowbar(chef, barclamps=[Ntp], secret=TEST_SECRET)
    names = Fleet(chef, crowbar=crowbar).ready(2)
    assert names[0] == "d52-54-00-00-00-01.example.com"  # the name the guide uses
    exec(compile(block, "barclamp-author.md", "exec"), {"crowbar": crowbar})
    proposal = crowbar.proposals.get("ntp", "default")
    assert proposal.elements["ntp-server"] == names and proposal.elements["ntp-client"] == []
    assert proposal.settings.external_servers == ["pool.example.com"] and proposal.settings.server_count == 2
    assert crowbar.proposals.status("ntp", "default").status == "ready"
