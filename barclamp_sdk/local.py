"""A real local Chef server for tests and demos: Debian's ``goiardi``.

>>> with LocalChefServer("/tmp/chef") as server:
...     server.client().roles.list()

``start(detach=True)`` leaves the server running after this process ends (the
CLI's ``crowbar local start``); ``LocalChefServer(dir).stop()`` from any
process stops it again. The directory holds goiardi's keys, its log, an
encrypted-data-bag secret and ``server.json`` (pids, port, URL). Processes
started alongside (the demo's BMC peers) can be handed to
:meth:`LocalChefServer.register_peers`; ``stop()`` ends them as well.

By default goiardi stores everything in PostgreSQL, like a production Chef
server: a private cluster in ``DIR/pg`` (see :mod:`barclamp_sdk.localdb`),
started before goiardi and stopped after it, with ``--pg-search`` (search
reads the database, so it sees every acknowledged write) and a pool of
``db_pool_size`` connections (without one goiardi opens a connection per
request). The database is the persistence: whatever goiardi acknowledged
survives a SIGKILL of goiardi, and restarting on the same directory carries
on where it stopped. Known goiardi 0.11 bug in this mode: ``Role.Save``
ignores SQL errors, so a role PUT can answer 200 without storing anything
while the database is unreachable; :meth:`LocalChefServer.start` therefore
never starts goiardi without a ready database, and ``docs/chef-admin.md``
says how to check.

``memory=True`` (``crowbar local start --memory``) keeps goiardi's in-memory
store instead: it starts in a fraction of the time but is NOT safe under
concurrency and loses data when killed. goiardi then runs with
``GOMAXPROCS=1`` and ``--use-unsafe-mem-store``. Its default in-memory store
hands each request a gob-encoded copy of an object and keeps a data bag's
items inside the bag object: a request reads the bag, adds its item and
saves the bag back, so concurrent writes to one bag undo each other, and two
creates of one id can both succeed. Go preempts goroutines, so one scheduler
thread alone is not enough once a bag is big (its copy takes long enough to
be interrupted). Measured here, in a bag of 300 items of 8 kB: 89 of 400
concurrent creates lost and 65 of 200 create races with two "winners" under
load; with shared objects and one scheduler thread (whose map updates cannot
interleave), 0 and 0, and three times the throughput. This lowers the odds,
it does not make the store atomic (see ``docs/reliability.md``). A real Chef
Server, or goiardi on PostgreSQL, stores items as separate rows with unique
ids and needs nothing of the kind. ``persist=True`` makes the in-memory store
freeze itself to disk every ``freeze_interval`` seconds (writes of the last
interval are lost on SIGKILL).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import ChefConfig, RetryPolicy
from barclamp_sdk.errors import ChefError, ConfigurationError, CrowbarError
from barclamp_sdk.localdb import PostgresCluster

ADMIN = "admin"
STATE_FILE = "server.json"
FILESTORE_DIR = "files"
DB_POOL_SIZE = 32
PEERS_FILE = "peers.json"
SECRET_FILE = "encrypted_data_bag_secret"
INSTALL_HINT = "install it with: sudo apt-get install -y goiardi"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _alive(pid: int, program: bytes = b"goiardi") -> bool:
    """Whether ``pid`` runs and is still ``program`` (pids get reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = _cmdline(pid)
    if cmdline is None:
        return True
    if program not in cmdline:
        return False  # the pid was reused by another program
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LocalChefServer:
    """goiardi on 127.0.0.1 with its own directory, on PostgreSQL or (``memory``) in memory."""

    def __init__(
        self,
        directory: str | Path,
        *,
        port: int | None = None,
        memory: bool = False,
        db_pool_size: int = DB_POOL_SIZE,
        persist: bool = False,
        freeze_interval: int = 1,
        executable: str = "goiardi",
        extra_args: tuple[str, ...] = (),
        tls: tuple[str | Path, str | Path] | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.port = port
        #: goiardi's in-memory store instead of PostgreSQL (unsafe under concurrency).
        self.memory = memory
        self.db_pool_size = db_pool_size
        #: with ``memory``: freeze the store to disk (PostgreSQL always keeps its data).
        self.persist = persist
        self.freeze_interval = freeze_interval
        self.executable = executable
        self.extra_args = extra_args
        #: (certificate, key) PEM files: serve HTTPS with them.
        self.tls = (Path(tls[0]).resolve(), Path(tls[1]).resolve()) if tls else None
        self.process: subprocess.Popen[bytes] | None = None
        self.database = PostgresCluster(self.directory)

    # -- paths and settings ---------------------------------------------------

    @property
    def key_path(self) -> Path:
        return self.directory / f"{ADMIN}.pem"

    @property
    def secret_path(self) -> Path:
        return self.directory / SECRET_FILE

    @property
    def url(self) -> str:
        if self.port is None and self.status() is None:  # not started here: maybe by another process
            raise CrowbarError(f"no local Chef server runs from {self.directory}; start it with "
                               f"`crowbar local start --dir {self.directory}`")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def config(self, **options: Any) -> ChefConfig:
        """Settings for an admin client of this server."""
        settings: dict[str, Any] = {
            "server_url": self.url,
            "client_name": ADMIN,
            "client_key_path": str(self.key_path),
            "encrypted_data_bag_secret": str(self.secret_path),
        }
        if self.tls:
            settings["verify"] = str(self.tls[0])
        return ChefConfig(**{**settings, **options})

    def client(self, **options: Any) -> ChefClient:
        """A connected admin client."""
        return ChefClient(self.config(**options))

    def environment(self) -> dict[str, str]:
        """The environment variables that point clients at this server."""
        return {
            "CHEF_SERVER_URL": self.url,
            "CHEF_CLIENT_NAME": ADMIN,
            "CHEF_CLIENT_KEY": str(self.key_path),
            "CHEF_ENCRYPTED_DATA_BAG_SECRET": str(self.secret_path),
        }

    def export_lines(self) -> str:
        """``export`` lines for ``eval`` in a shell."""
        pairs = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.environment().items())
        return f"export {pairs}\n"

    # -- lifecycle --------------------------------------------------------------

    def _command(self) -> list[str]:
        assert self.port is not None
        command = [
            self.executable, "-A",
            "-I", "127.0.0.1", "-P", str(self.port), "-H", "127.0.0.1",
            f"--conf-root={self.directory}",
            "-L", str(self.directory / "goiardi.log"),
        ]
        if not self.memory:
            command += self.database.goiardi_args(self.db_pool_size)
            command.append(f"--local-filestore-dir={self.directory / FILESTORE_DIR}")
        else:
            command.append("--use-unsafe-mem-store")  # see the module docstring
        if self.memory and self.persist:
            command += [
                "-D", str(self.directory / "data.bin"),
                "-i", str(self.directory / "index.bin"),
                "-F", str(self.freeze_interval),
            ]
        if self.tls:
            command += ["--use-ssl", f"--ssl-cert={self.tls[0]}", f"--ssl-key={self.tls[1]}"]
        return command + list(self.extra_args)

    def start(self, *, detach: bool = False, timeout: float = 20.0) -> LocalChefServer:
        """Start goiardi and wait until an authenticated request succeeds."""
        if shutil.which(self.executable) is None:
            raise ConfigurationError(f"goiardi is not installed; {INSTALL_HINT}")
        running = self.status()
        if running is not None:
            raise CrowbarError(
                f"a local Chef server already runs from {self.directory} "
                f"(pid {running['pid']}, {running['url']}); stop it with "
                f"`crowbar local stop --dir {self.directory}`"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ensure_secret()
        began = time.monotonic()
        if not self.memory:
            (self.directory / FILESTORE_DIR).mkdir(exist_ok=True)
            self.database.start(detach=detach, timeout=timeout * 3)
        try:
            self._start_goiardi(detach, timeout)
        except BaseException:
            if not self.memory:
                self.database.stop()
            raise
        assert self.process is not None
        state = {
            "pid": self.process.pid, "port": self.port, "url": self.url,
            "store": "memory" if self.memory else "postgresql",
            "persist": self.persist or not self.memory,
            "postgres_pid": None if self.memory else self.database.pid(),
            "started_at": time.time(), "start_seconds": round(time.monotonic() - began, 3),
            **self.environment(),
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2))
        return self

    def _start_goiardi(self, detach: bool, timeout: float) -> None:
        fixed_port = self.port
        environment = {**os.environ, "GOMAXPROCS": "1"} if self.memory else None  # see the module docstring
        for _ in range(5):
            self.port = fixed_port or free_port()
            if self.memory and not self.persist:
                self.key_path.unlink(missing_ok=True)  # regenerated on every start
            log = open(self.directory / "goiardi.out", "ab")
            try:
                self.process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=detach, env=environment,
                )
            finally:
                log.close()
            if self._wait_ready(timeout):
                return
            if fixed_port:
                raise CrowbarError(
                    f"goiardi could not start on port {fixed_port}; see "
                    f"{self.directory / 'goiardi.out'}"
                )
        raise CrowbarError(f"goiardi did not start; see {self.directory / 'goiardi.out'}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # exited: usually the port was taken
            if self.key_path.exists():
                try:
                    with self.client(retry=RetryPolicy(attempts=1), read_timeout=5) as probe:
                        probe.get("/nodes")
                    return True
                except (ChefError, ConfigurationError):
                    pass
            time.sleep(0.02)
        self.process.kill()
        raise CrowbarError(
            f"goiardi did not answer within {timeout:.0f}s; see {self.directory / 'goiardi.out'}"
        )

    def _ensure_secret(self) -> None:
        if not self.secret_path.exists():
            fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(secrets.token_bytes(384)).decode() + "\n")

    def status(self) -> dict[str, Any] | None:
        """The running server's state (pid, url ...), or None if it is not running."""
        path = self.directory / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not _alive(int(state.get("pid", 0))):
            return None
        self.port = int(state["port"])
        self.memory = state.get("store", "memory") == "memory"
        self.persist = bool(state.get("persist"))
        return state

    def register_peers(self, pids: list[int]) -> None:
        """Record processes that :meth:`stop` should end along with the server."""
        path = self.directory / PEERS_FILE
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = []
        known += [{"pid": pid, "cmdline": cmdline.decode(errors="replace")}
                  for pid in pids if (cmdline := _cmdline(pid)) is not None]
        path.write_text(json.dumps(known, indent=2))

    def _stop_peers(self, timeout: float) -> int:
        path = self.directory / PEERS_FILE
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            return 0
        running = [int(p["pid"]) for p in known
                   if (_cmdline(int(p["pid"])) or b"").decode(errors="replace") == p.get("cmdline")]
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_cmdline(pid) for pid in running):
            time.sleep(0.05)
        for pid in running:
            if _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        path.unlink(missing_ok=True)
        return len(running)

    def stop(self, *, timeout: float = 10.0, kill: bool = False) -> bool:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and its registered
        peers; False if nothing ran."""
        stopped_peers = self._stop_peers(timeout)
        state = self.status()
        pid = self.process.pid if self.process is not None else (state or {}).get("pid")
        if not pid:
            stopped_database = self.database.stop(timeout=timeout)  # left behind by a killed goiardi
            (self.directory / STATE_FILE).unlink(missing_ok=True)
            return stopped_peers > 0 or stopped_database
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None:
                if self.process.poll() is not None:
                    break
            elif not _alive(pid):
                break
            time.sleep(0.02)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait(5)
        self.process = None
        self.database.stop(timeout=timeout)  # after goiardi: it must never run without its database
        (self.directory / STATE_FILE).unlink(missing_ok=True)
        return True

    def erase(self) -> None:
        """Delete the stopped server's data (database, frozen store, keys, uploaded files)."""
        if self.status() is not None or self.database.pid() is not None:
            raise CrowbarError(f"the local Chef server in {self.directory} is running; stop it first")
        shutil.rmtree(self.database.root, ignore_errors=True)
        shutil.rmtree(self.directory / FILESTORE_DIR, ignore_errors=True)
        for name in ("data.bin", "index.bin", "admin.pem", "chef-validator.pem", "chef-webui.pem", STATE_FILE):
            (self.directory / name).unlink(missing_ok=True)

    def restart(self, *, kill: bool = False) -> LocalChefServer:
        """Stop and start again on the same port (data survives unless in memory and not persisted)."""
        self.stop(kill=kill)
        return self.start()

    def __enter__(self) -> LocalChefServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
