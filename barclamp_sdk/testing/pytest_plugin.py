"""pytest fixtures for barclamp authors (installed as the ``barclamp_sdk`` plugin).

``chef_server``
    session-scoped: a real goiardi on 127.0.0.1 and a connected admin client.
    goiardi stores its data in a private PostgreSQL, like a production server;
    ``CROWBAR_TEST_SERVER=memory`` gives its in-memory store instead (faster to
    start, unsafe under concurrency).
``chef``
    a :class:`~barclamp_sdk.chef.ChefClient` on an emptied server, per test.
``fault_proxy``
    a factory of :class:`~barclamp_sdk.testing.faultproxy.FaultProxy` in front
    of the session server; stopped after the test.
``production``
    a factory of :class:`ProductionServer`: a fault proxy with the production
    personality (:mod:`barclamp_sdk.testing.production`) in front of the
    session server, and clients on its organization URL; stopped after the test.
``barclamps_under_test``
    override it in your ``conftest.py`` to return your barclamp classes.
``crowbar``
    a :class:`~barclamp_sdk.Crowbar` on the emptied server, with your barclamps
    (plus the installed ones) and a test secret for encrypted data bags.
``fleet``
    a :class:`~barclamp_sdk.testing.fleet.Fleet` of simulated machines.
``crowbar_env``
    environment variables that point the ``crowbar`` command and scripts
    using :func:`barclamp_sdk.connect` at the emptied test server, with your
    barclamps and the test secret (for ``subprocess.run(..., env=...)``).
``crowbar_cli``
    the ``crowbar`` command run in this process against the test server:
    ``crowbar_cli("machines", "list")`` returns ``(exit code, stdout,
    stderr)``; ``crowbar_cli.json(...)`` adds ``--json`` and decodes stdout,
    asserting exit code 0.

In tests marked ``@pytest.mark.production_personality`` (or a module with
``pytestmark = pytest.mark.production_personality``), and in every test with
``CROWBAR_TEST_PERSONALITY=production`` in the environment, ``chef``,
``crowbar``, ``fleet``, ``crowbar_env`` and ``crowbar_cli`` all talk to the
session server through one production proxy (organization URL, 1 s search
lag, search window 500; ``CROWBAR_TEST_SEARCH_LAG`` and
``CROWBAR_TEST_SEARCH_WINDOW`` change those), so a whole suite runs against
a production-shaped server; ``production_personality(False)`` keeps a test on
the plain server.

The fixtures need goiardi (``sudo apt-get install goiardi``); without it they
fail with that instruction rather than skipping, so a missing server is never
mistaken for a passing suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from barclamp_sdk.api import Crowbar
from barclamp_sdk import Barclamp
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import ChefConfig
from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.testing.faultproxy import FaultProxy
from barclamp_sdk.testing.production import ProductionPersonality
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.restore import DatabaseSnapshot

TEST_SECRET = b"barclamp-sdk test secret, not for production"
#: ``CROWBAR_TEST_SERVER``: ``postgresql`` (default) or ``memory``.
SERVER_ENV = "CROWBAR_TEST_SERVER"


def memory_requested() -> bool:
    """Whether ``$CROWBAR_TEST_SERVER`` asks for goiardi's in-memory store."""
    value = os.environ.get(SERVER_ENV, "postgresql").strip().lower() or "postgresql"
    if value not in ("postgresql", "memory"):
        raise pytest.UsageError(f"{SERVER_ENV}={value!r}: use 'postgresql' (the default) or 'memory'")
    return value == "memory"

PERSONALITY_ENV = "CROWBAR_TEST_PERSONALITY"
#: The mark that sends a test (or a module, with ``pytestmark``) through the personality.
PERSONALITY_MARK = "production_personality"

# Clients goiardi creates for itself; never deleted by reset().
_BUILTIN_CLIENTS = {"admin", "chef-validator", "chef-webui"}


@dataclass
class RunningChefServer:
    """A started local server plus an admin client."""

    server: LocalChefServer
    client: ChefClient

    @property
    def url(self) -> str:
        return self.server.url

    def config(self, **options: Any) -> ChefConfig:
        """Admin client settings (optionally changed)."""
        return self.server.config(**options)

    def new_client(self, **options: Any) -> ChefClient:
        """Another admin client with its own connection pool."""
        return ChefClient(self.config(**options))

    def database_snapshot(self) -> DatabaseSnapshot | None:
        """A :class:`~barclamp_sdk.testing.restore.DatabaseSnapshot` of this server's database, to
        ``take()`` after a set-up and ``restore()`` before each try (None with the in-memory store)."""
        return DatabaseSnapshot.of(self.server)

    def reset(self) -> None:
        """Delete every object the tests created."""
        chef = self.client
        for bag in chef.data_bags.list():
            chef.data_bags.delete(bag)
        for name in chef.nodes.list():
            chef.nodes.delete(name)
        for name in chef.roles.list():
            chef.roles.delete(name)
        for name in chef.environments.list():
            if name != "_default":
                chef.environments.delete(name)
        for name in chef.clients.list():
            if name not in _BUILTIN_CLIENTS:
                chef.clients.delete(name)


@dataclass
class ProductionServer:
    """A production-personality proxy in front of the test server."""

    proxy: FaultProxy
    personality: ProductionPersonality
    upstream: RunningChefServer
    #: The admin client the ``chef`` fixture hands out in production mode.
    shared_client: ChefClient | None = None

    @property
    def url(self) -> str:
        """The organization URL clients use."""
        return self.proxy.url + self.personality.prefix

    def config(self, **options: Any) -> ChefConfig:
        """Admin client settings on the organization URL (optionally changed)."""
        return self.upstream.config(**{"server_url": self.url, **options})

    def client(self, **options: Any) -> ChefClient:
        """An admin client through the proxy."""
        return ChefClient(self.config(**options))

    def environment(self) -> dict[str, str]:
        """CHEF_* variables pointing at the proxy."""
        return {**self.upstream.server.environment(), "CHEF_SERVER_URL": self.url}

    def stop(self) -> None:
        self.proxy.stop()


def start_production(chef_server: RunningChefServer, **knobs: Any) -> ProductionServer:
    """Start a production proxy in front of ``chef_server`` (knobs: see ProductionPersonality)."""
    personality = ProductionPersonality(keys={"admin": chef_server.server.key_path}, **knobs)
    proxy = FaultProxy(chef_server.url, production=personality).start()
    return ProductionServer(proxy, personality, chef_server)


@pytest.fixture(scope="session")
def chef_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningChefServer]:
    """A real goiardi Chef server for the whole test session."""
    server = LocalChefServer(tmp_path_factory.mktemp("chef-server"), memory=memory_requested()).start()
    client = server.client()
    try:
        yield RunningChefServer(server, client)
    finally:
        client.close()
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PERSONALITY_MARK}(enabled=True): run through the session's production personality "
                   "proxy (False: never); unmarked tests follow $CROWBAR_TEST_PERSONALITY")


def personality_wanted(node: pytest.Item | pytest.Collector) -> bool:
    """Whether tests at ``node`` talk through the production personality: its closest
    ``production_personality`` mark decides, else ``$CROWBAR_TEST_PERSONALITY``."""
    mark = node.get_closest_marker(PERSONALITY_MARK)
    if mark is not None:
        return bool(mark.args[0] if mark.args else mark.kwargs.get("enabled", True))
    wanted = os.environ.get(PERSONALITY_ENV, "").strip().lower()
    if wanted in ("", "goiardi", "none"):
        return False
    if wanted != "production":
        raise pytest.UsageError(f"{PERSONALITY_ENV}={wanted!r}: use 'production' or leave it unset")
    return True


@pytest.fixture(scope="session")
def production_proxy(chef_server: RunningChefServer) -> Iterator[ProductionServer]:
    """The session's production proxy (started on first use; see ``personality_server``)."""
    server = start_production(
        chef_server,
        lag=float(os.environ.get("CROWBAR_TEST_SEARCH_LAG", "1.0")),
        window=int(os.environ.get("CROWBAR_TEST_SEARCH_WINDOW", "500")),
    )
    server.shared_client = server.client()
    try:
        yield server
    finally:
        server.shared_client.close()
        server.stop()


@pytest.fixture
def personality_server(request: pytest.FixtureRequest) -> ProductionServer | None:
    """The session's production proxy for a test that goes through it (see
    :func:`personality_wanted`), else None."""
    if not personality_wanted(request.node):
        return None
    server: ProductionServer = request.getfixturevalue("production_proxy")
    return server


@pytest.fixture
def chef(chef_server: RunningChefServer, personality_server: ProductionServer | None) -> ChefClient:
    """An admin :class:`~barclamp_sdk.chef.client.ChefClient` on an emptied Chef server (per test).

    Its collections: ``chef.nodes``, ``chef.roles``, ``chef.environments`` and
    ``chef.clients`` (each ``list()``, ``get(name)``, ``find(name)`` (None when
    absent), ``create(body)``, ``update(name, body)``, ``delete(name)``), and
    ``chef.data_bags`` (``list()``, ``items(bag)``, ``get_item(bag, id)``,
    ``find_item``, ``create_item(bag, item)``, ``update_item``, ``delete_item``,
    ``ensure(bag)``); besides, ``chef.search(index, query)``,
    ``chef.partial_search(index, query, keys)`` and ``chef.get/put/post/delete(path)``.
    Talks through the production proxy when ``CROWBAR_TEST_PERSONALITY=production``.
    """
    chef_server.reset()
    if personality_server is not None:
        personality_server.personality.forget()
        assert personality_server.shared_client is not None
        return personality_server.shared_client
    return chef_server.client


@pytest.fixture
def production(chef_server: RunningChefServer) -> Iterator[Callable[..., ProductionServer]]:
    """Make production-personality proxies in front of the test server."""
    servers: list[ProductionServer] = []

    def make(**knobs: Any) -> ProductionServer:
        server = start_production(chef_server, **knobs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fault_proxy(chef_server: RunningChefServer) -> Iterator[Callable[..., FaultProxy]]:
    """Make fault-injecting proxies in front of the test server."""
    proxies: list[FaultProxy] = []

    def make(**options: Any) -> FaultProxy:
        proxy = FaultProxy(chef_server.url, **options).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def barclamps_under_test() -> list[type[Barclamp]]:
    """Barclamp classes to register besides the installed ones (override me)."""
    return []


@pytest.fixture
def crowbar(chef: ChefClient, barclamps_under_test: list[type[Barclamp]]) -> Crowbar:
    """The Crowbar API on an emptied server."""
    return Crowbar(chef, barclamps=barclamps_under_test, secret=TEST_SECRET)


@pytest.fixture
def fleet(chef: ChefClient, crowbar: Crowbar) -> Fleet:
    """Simulated machines (nodes, chef-client runs, boot scripts)."""
    return Fleet(chef, crowbar=crowbar)


@pytest.fixture
def crowbar_env(chef: ChefClient, chef_server: RunningChefServer, barclamps_under_test: list[type[Barclamp]],
                tmp_path: Path, request: pytest.FixtureRequest,
                personality_server: ProductionServer | None) -> dict[str, str]:
    """os.environ plus what the CLI and connect() need to reach the test server.

    The project's root directory goes first on PYTHONPATH, so that barclamps
    defined in it import in the child process."""
    secret = tmp_path / "encrypted_data_bag_secret"
    secret.write_bytes(TEST_SECRET)
    secret.chmod(0o600)
    extra = ",".join(f"{cls.__module__}:{cls.__qualname__}" for cls in barclamps_under_test)
    path = os.pathsep.join(p for p in (str(request.config.rootpath), os.environ.get("PYTHONPATH")) if p)
    server = personality_server if personality_server is not None else chef_server.server
    return {**os.environ, **server.environment(), "PYTHONPATH": path,
            "CHEF_ENCRYPTED_DATA_BAG_SECRET": str(secret), "CROWBAR_BARCLAMPS": extra}


class CLIRunner:
    """Runs the ``crowbar`` command in-process (see the ``crowbar_cli`` fixture)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        from barclamp_sdk.cli import main

        self._capsys.readouterr()
        code = main(list(args))
        out, err = self._capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, (args, code, err)
        return json.loads(out)


@pytest.fixture
def crowbar_cli(crowbar_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> CLIRunner:
    """The ``crowbar`` command, in this process, pointed at the emptied test server."""
    from barclamp_sdk.cli import context

    for key, value in crowbar_env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.setattr(context, "_REGISTRY", None)  # registered barclamps come from this environment
    return CLIRunner(capsys)
