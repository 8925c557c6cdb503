"""The goiardi launcher and the `crowbar local` / `crowbar raw` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from barclamp_sdk.errors import ConfigurationError
from barclamp_sdk.local import LocalChefServer


def crowbar(*args, env=None, input=None):
    return subprocess.run(
        [sys.executable, "-m", "barclamp_sdk.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, input=input, timeout=120,
    )


def test_persisted_server_keeps_data_and_keys_across_restart(tmp_path):
    server = LocalChefServer(tmp_path, persist=True).start()
    try:
        key_before = server.key_path.read_text()
        server.client().roles.create({"name": "kept", "description": "survives"})
        import time
        time.sleep(1.5)  # one freeze interval
        server.restart()
        assert server.key_path.read_text() == key_before
        assert server.client().roles.get("kept")["description"] == "survives"
    finally:
        server.stop()
    assert server.status() is None


def test_missing_goiardi_says_how_to_install(tmp_path):
    with pytest.raises(ConfigurationError, match="apt-get install -y goiardi"):
        LocalChefServer(tmp_path, executable="no-such-goiardi").start()


def test_cli_local_start_status_raw_stop(tmp_path):
    directory = str(tmp_path / "srv")
    started = crowbar("local", "start", "--dir", directory)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("export CHEF_SERVER_URL=")
    env = dict(part.split("=", 1) for part in started.stdout.split()[1:])
    try:
        status = crowbar("local", "status", "--dir", directory, "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
        described = crowbar("local", "env", "--dir", directory, "--json")
        assert described.returncode == 0 and json.loads(described.stdout)["environment"] == env
        twice = crowbar("local", "start", "--dir", directory)
        assert twice.returncode == 1 and "already runs" in twice.stderr
        made = crowbar("raw", "POST", "/roles", "--data", "-", env=env,
                       input=json.dumps({"name": "web", "run_list": ["recipe[nginx]"]}))
        assert made.returncode == 0, made.stderr
        shown = crowbar("raw", "GET", "/roles/web", env=env)
        assert json.loads(shown.stdout)["run_list"] == ["recipe[nginx]"]
        missing = crowbar("raw", "GET", "/roles/nope", env=env)
        assert missing.returncode == 1
        assert missing.stderr.strip() == "error: GET /roles/nope failed with HTTP 404: Cannot load role nope"
        bad = crowbar("raw", "PUT", "/roles/web", "--data", "-", env=env, input="{not json")
        assert bad.returncode == 1 and bad.stderr.startswith("error: --data") and "is not valid JSON" in bad.stderr
        assert "Traceback" not in bad.stderr
        usage = crowbar("raw", "GET", "roles", env=env)
        assert usage.returncode == 1 and "must start with /" in usage.stderr
        assert json.loads(status.stdout)["store"] == "postgresql"
        assert LocalChefServer(directory).database.pid() is not None
    finally:
        stopped = crowbar("local", "stop", "--dir", directory, "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout) == {"stopped": True, "dir": directory}
    assert crowbar("local", "status", "--dir", directory).returncode == 1
    assert LocalChefServer(directory).database.pid() is None  # PostgreSQL stopped with goiardi
    again = crowbar("local", "start", "--dir", directory)  # the data is still there
    try:
        assert again.returncode == 0, again.stderr
        env = dict(part.split("=", 1) for part in again.stdout.split()[1:])
        assert json.loads(crowbar("raw", "GET", "/roles/web", env=env).stdout)["run_list"] == ["recipe[nginx]"]
    finally:
        assert crowbar("local", "stop", "--dir", directory).returncode == 0


def test_cli_memory_server(tmp_path):
    directory = str(tmp_path / "mem")
    started = crowbar("local", "start", "--dir", directory, "--memory")
    try:
        assert started.returncode == 0, started.stderr
        assert "data in memory" in started.stderr
        status = crowbar("local", "status", "--dir", directory)
        assert status.returncode == 0 and "in memory" in status.stdout
        assert not (tmp_path / "mem" / "pg").exists()
    finally:
        assert crowbar("local", "stop", "--dir", directory).returncode == 0


def test_cli_without_configuration_is_one_clear_line(tmp_path):
    env = {"HOME": str(tmp_path), "CHEF_SERVER_URL": "", "CHEF_CLIENT_NAME": "", "CHEF_CLIENT_KEY": ""}
    result = crowbar("raw", "GET", "/nodes", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Chef server configured")


def test_pytest_plugin_gives_downstream_projects_a_server(pytester):
    pytester.makepyfile(
        """
        def test_uses_the_fixture(chef_server, chef):
            chef.roles.create({"name": "from-plugin"})
            assert chef_server.client.roles.get("from-plugin")["name"] == "from-plugin"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
