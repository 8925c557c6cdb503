"""The README's main job, end to end, and a scan for secrets in everything it left.

The demo runs as users run it (the ``crowbar demo`` command in a child
process). Afterwards every generated or given secret is looked for in the
printed output, in every object on the Chef server (but the encrypted
secrets bag) and in the CLI's machine-readable dumps: none may appear.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from barclamp_sdk import Crowbar
from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.model.naming import SECRETS_BAG, node_role_name
from barclamp_sdk.testing.pytest_plugin import personality_wanted

CROWBAR = str(Path(sys.executable).with_name("crowbar"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp("demo")
    production = ["--production"] if personality_wanted(request.node) else []
    done = subprocess.run([CROWBAR, "demo", "--dir", str(directory), *production], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "COLUMNS": "200"})
    server = LocalChefServer(directory)
    try:
        yield directory, server, done
    finally:
        server.stop()


def _cli(server, *args):
    done = subprocess.run([CROWBAR, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **server.environment()})
    assert done.returncode in (0, 3), done.stderr
    return done.stdout + done.stderr


def test_the_demo_deploys_everything_and_leaves_the_server_running(demo):
    directory, server, done = demo
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    for step in ("1. A real Chef server", "2. Machines appear", "3. Proposals from the inventory",
                 "4. Commit in dependency order", "5. Allocate", "6. The cluster"):
        assert step in out
    assert "nova/default: queued: depends on ceph/default" in out       # visibly queued ...
    for barclamp in ("bios", "ceph", "swift", "eqlx", "nova"):
        assert f"{barclamp}/default: ready" in out                      # ... then applied
    assert "12 of 12 machines ready" in out
    assert f"crowbar local stop --dir {directory}" in out
    crowbar = Crowbar(server.client())
    machines = crowbar.machines.list()
    assert len(machines) == 12 and {m.state for m in machines} == {"ready"}
    nova = crowbar.proposals.get("nova", "default")
    assert nova.attributes["volume"]["volume_type"] == "rbd"
    assert crowbar.queue.items() == []
    # What the final table points Chef admins at exists.
    for machine in machines:
        assert f"crowbar raw GET /roles/{node_role_name(machine.name)}" in out
    raw = json.loads(_cli(server, "raw", "GET", f"/roles/{node_role_name(machines[0].name)}"))
    assert raw["name"] == node_role_name(machines[0].name)
    # BIOS went through the real Redfish peer; power and boot through ipmi_sim.
    assert "BIOS set through the BMC of 6" in out


def test_the_printed_instructions_work_from_a_fresh_shell(demo):
    directory, server, done = demo
    tail = done.stdout.split("keep running:", 1)[1].splitlines()[1:]
    setup = [line.strip() for line in tail if line.strip().startswith((". ", "export PATH=", "eval "))]
    assert setup and setup[-1] == f'eval "$(crowbar local env --dir {directory})"'
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHEF_", "VIRTUAL_ENV"))}
    script = "\n".join([*setup, "crowbar machines list --json"])
    shell = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, timeout=120,
                           env={**env, "PATH": path})
    assert shell.returncode == 0, shell.stderr
    assert len(json.loads(shell.stdout)) == 12


def test_no_secret_appears_anywhere(demo):
    directory, server, done = demo
    crowbar = Crowbar(server.client())
    secrets = {str(value) for _, value in crowbar.secrets.values() if isinstance(value, str) and len(value) >= 6}
    secrets |= {"calvin", "grp-S3cret"}  # the BMC and SAN passwords the demo gave
    generated = {s for s in secrets if s not in ("calvin", "grp-S3cret")}
    assert len(generated) >= 3  # ceph keys, the swift hash path secret ...

    chef = crowbar.chef
    dumps = {"output of crowbar demo": done.stdout + done.stderr}
    for name in chef.roles.list():
        dumps[f"role {name}"] = json.dumps(chef.roles.get(name))
    for name in chef.nodes.list():
        dumps[f"node {name}"] = json.dumps(chef.nodes.get(name))
    for bag in chef.data_bags.list():
        for item in chef.data_bags.items(bag):
            raw = json.dumps(chef.data_bags.get_item(bag, item))
            dumps[f"data bag item {bag}/{item}"] = raw
    for barclamp in ("bios", "ceph", "swift", "eqlx", "nova"):
        dumps[f"{barclamp} proposal show --json"] = _cli(server, barclamp, "proposal", "show", "default", "--json")
        dumps[f"{barclamp} proposal show"] = _cli(server, barclamp, "proposal", "show", "default")
    dumps["batch export"] = _cli(server, "batch", "export")
    dumps["machines list --json"] = _cli(server, "machines", "list", "--json")
    machine = crowbar.machines.list()[0].name
    dumps["roles show --json"] = _cli(server, "roles", "show", machine, "--json")
    dumps["machines show --json"] = _cli(server, "machines", "show", machine, "--json")
    dumps["goiardi log"] = (directory / "goiardi.log").read_text(errors="replace") \
        if (directory / "goiardi.log").exists() else ""

    leaks = [(where, secret) for where, text in dumps.items() for secret in secrets
             if secret in text and not where.startswith(f"data bag item {SECRETS_BAG}/")]
    assert leaks == []
    # The secrets bag itself holds only ciphertext.
    for item in chef.data_bags.items(SECRETS_BAG):
        raw = json.dumps(chef.data_bags.get_item(SECRETS_BAG, item))
        assert not any(secret in raw for secret in secrets)
