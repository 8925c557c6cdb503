"""A private PostgreSQL cluster inside a local Chef server's directory.

:class:`~barclamp_sdk.local.LocalChefServer` keeps goiardi's data in one (see
its docstring): ``DIR/pg/data`` is the cluster (created with ``initdb`` on the
first start, goiardi's schema loaded once with ``psql``), and PostgreSQL
listens only on a unix socket in ``DIR/pg`` (no TCP port: nothing outside the
directory can reach it; authentication is ``trust`` on that socket, whose
directory only the cluster's owner can enter). When ``DIR`` is too long for a
socket path (107 bytes) the socket goes into a private directory under the
system's temporary directory instead, recorded in ``DIR/pg/socket-dir``.

PostgreSQL refuses to run as root. Started by root, the cluster belongs to
the unprivileged ``postgres`` system user (created by Debian's ``postgresql``
package): ``DIR/pg`` is handed to it and its programs run under it through
``setpriv``, keeping only the capability to traverse directories
(``CAP_DAC_READ_SEARCH``), so that ``DIR`` may sit under a directory only root
can enter (pytest's ``/tmp/pytest-of-root``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from barclamp_sdk.errors import ConfigurationError, CrowbarError

PG_HINT = "install it with: sudo apt-get install -y postgresql"
SCHEMA = Path("/usr/share/goiardi/sql-files/sql-files/goiardi-schema-postgres.sql")
DB_USER = "goiardi"
DB_NAME = "goiardi"
PG_PORT = 5432  # only names the socket file: the cluster listens on no TCP port
SOCKET_MAX = 107  # sizeof(sun_path) - 1 on Linux
SYSTEM_USER = "postgres"
_CAP_DAC_READ_SEARCH = 2


def find_bindir(bindir: str | Path | None = None) -> Path:
    """The directory holding ``initdb``, ``postgres`` and ``psql``: ``bindir``,
    ``$CROWBAR_PG_BINDIR``, the newest ``/usr/lib/postgresql/*/bin`` (Debian),
    or wherever ``initdb`` is on the PATH."""
    candidates: list[Path] = []
    for given in (bindir, os.environ.get("CROWBAR_PG_BINDIR")):
        if given:
            candidates.append(Path(given))
    versions = []
    for found in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        match = re.fullmatch(r"(\d+)(?:\.(\d+))?", found.parent.parent.name)
        if match:
            versions.append(((int(match[1]), int(match[2] or 0)), found.parent))
    candidates += [path for _, path in sorted(versions, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "postgres", "psql")):
            return candidate
    raise ConfigurationError(f"PostgreSQL is not installed (no initdb found); {PG_HINT}")


def _has_capability(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


class PostgresCluster:
    """One private cluster: ``initdb`` once, then start and stop it with goiardi."""

    def __init__(self, directory: str | Path, *, bindir: str | Path | None = None) -> None:
        self.root = Path(directory).resolve() / "pg"
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._bindir = bindir
        self.process: subprocess.Popen[bytes] | None = None

    # -- who runs it -------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        if not isinstance(self._bindir, Path) or not (self._bindir / "initdb").is_file():
            self._bindir = find_bindir(self._bindir)
        return self._bindir

    def _owner(self) -> pwd.struct_passwd | None:
        """The unprivileged user the cluster runs as when we are root (else None: ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ConfigurationError(
                f"running as root, PostgreSQL needs the unprivileged user {SYSTEM_USER!r}; {PG_HINT}"
            ) from None

    def _as_owner(self, command: list[str]) -> list[str]:
        owner = self._owner()
        if owner is None:
            return command
        prefix = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--clear-groups"]
        if _has_capability(_CAP_DAC_READ_SEARCH):
            prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        return prefix + command

    def _hand_over(self, path: Path) -> None:
        """Give ``path`` (recursively) to the cluster's owner when running as root."""
        owner = self._owner()
        if owner is None or not path.exists():
            return
        for base, dirs, files in os.walk(path):
            for name in [base, *(os.path.join(base, n) for n in dirs + files)]:
                st = os.lstat(name)
                if (st.st_uid, st.st_gid) != (owner.pw_uid, owner.pw_gid):
                    os.lchown(name, owner.pw_uid, owner.pw_gid)

    # -- the socket ----------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket is (``DIR/pg``, or a short private directory)."""
        recorded = self.root / "socket-dir"
        if recorded.exists():
            return Path(recorded.read_text().strip())
        return self.root

    def _choose_socket_dir(self) -> Path:
        recorded = self.root / "socket-dir"
        old = self.socket_dir
        if old != self.root:
            shutil.rmtree(old, ignore_errors=True)
            recorded.unlink(missing_ok=True)
        if len(str(self.root / f".s.PGSQL.{PG_PORT}.lock")) <= SOCKET_MAX:
            return self.root
        short = Path(tempfile.mkdtemp(prefix="bsdk-pg-"))
        owner = self._owner()
        if owner is not None:
            os.chown(short, owner.pw_uid, owner.pw_gid)
        recorded.write_text(f"{short}\n")
        return short

    # -- lifecycle -------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        return (self.root / "schema-loaded").exists()

    def _run(self, command: list[str], what: str, *, as_owner: bool = True, timeout: float = 120) -> None:
        result = subprocess.run(self._as_owner(command) if as_owner else command,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            with open(self.root / "setup.log", "a") as log:
                log.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
            detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrowbarError(f"PostgreSQL {what} failed ({detail}); see {self.root / 'setup.log'}")

    def pid(self) -> int | None:
        """The running postmaster's pid (from ``postmaster.pid``), or None."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"postgres" not in cmdline or str(self.data).encode() not in cmdline:
            return None  # stale file, pid reused
        return pid

    def _ready(self) -> bool:
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def start(self, *, detach: bool, timeout: float = 60.0) -> None:
        """Start the cluster (creating it and loading the schema the first time)."""
        if not SCHEMA.is_file():
            raise ConfigurationError(f"goiardi's PostgreSQL schema {SCHEMA} is missing; "
                                     "install it with: sudo apt-get install -y goiardi")
        bindir = self.bindir
        self.root.mkdir(parents=True, exist_ok=True)
        fresh = not self.initialized
        if fresh and self.data.exists():
            shutil.rmtree(self.data)  # an earlier first start died half way: nothing of value yet
        self._hand_over(self.root)
        self.root.chmod(0o700)
        if self.pid() is not None:  # left running (goiardi was killed): reuse it
            if self._wait_ready(timeout):
                return
        if fresh:
            self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", DB_USER, "--auth=trust",
                       "-E", "UTF8", "--locale=C"], "initdb")
        socket_dir = self._choose_socket_dir()
        deadline = time.monotonic() + timeout
        while True:
            logged = self.log_path.stat().st_size if self.log_path.exists() else 0
            log = open(self.log_path, "ab")
            try:
                self.process = subprocess.Popen(
                    self._as_owner([str(bindir / "postgres"), "-D", str(self.data), "-k", str(socket_dir),
                                    "-p", str(PG_PORT), "-c", "listen_addresses=", "-c", "max_connections=100"]),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=detach,
                )
            finally:
                log.close()
            if self._wait_ready(max(0.0, deadline - time.monotonic())):
                break
            if self.process.poll() is not None and self._orphans_attached(logged) and time.monotonic() < deadline:
                # A killed postmaster's backends exit on their own, a moment later: wait for them.
                time.sleep(0.2)
                continue
            self.stop()
            raise CrowbarError(f"PostgreSQL did not start within {timeout:.0f}s; see {self.log_path}")
        if fresh:
            self._run(self.psql("postgres") + ["-c", f"CREATE DATABASE {DB_NAME}"], "CREATE DATABASE",
                      as_owner=False)
            self._run(self.psql() + ["-1", "-f", str(SCHEMA)], "schema load", as_owner=False)
            (self.root / "schema-loaded").write_text(f"{SCHEMA}\n")

    def psql(self, database: str = DB_NAME) -> list[str]:
        """The ``psql`` command line for ``database`` of this cluster (quiet, unaligned, tuples
        only, no ``.psqlrc``, stopping at the first error); add ``-c SQL`` or ``-f FILE``."""
        return [str(self.bindir / "psql"), "-X", "-h", str(self.socket_dir), "-p", str(PG_PORT), "-U", DB_USER,
                "-d", database, "-qAt", "-v", "ON_ERROR_STOP=1"]

    def _orphans_attached(self, offset: int) -> bool:
        """Whether the start logged after ``offset`` failed because backends of a killed
        postmaster still hold the cluster's shared memory."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return b"pre-existing shared memory block" in log.read()
        except OSError:
            return False

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            if self._ready() and self.pid() is not None:
                return True
            time.sleep(0.02)
        return False

    def stop(self, *, timeout: float = 30.0) -> bool:
        """Fast shutdown (SIGINT; SIGQUIT, then SIGKILL if it hangs); False if it was not running."""
        pid = self.process.pid if self.process is not None and self.process.poll() is None else self.pid()
        if pid is None:
            self.process = None
            return False
        for how, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, how)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.process is not None:
                    if self.process.poll() is not None:
                        break
                elif not Path(f"/proc/{pid}").exists() or self.pid() is None:
                    break
                time.sleep(0.02)
            else:
                continue
            break
        self.process = None
        socket_dir = self.socket_dir
        if socket_dir != self.root:
            shutil.rmtree(socket_dir, ignore_errors=True)
            (self.root / "socket-dir").unlink(missing_ok=True)
        return True

    def goiardi_args(self, pool_size: int) -> list[str]:
        """goiardi's flags for this cluster."""
        return [
            "--use-postgresql", f"--postgresql-host={self.socket_dir}", f"--postgresql-port={PG_PORT}",
            f"--postgresql-username={DB_USER}", f"--postgresql-dbname={DB_NAME}",
            "--postgresql-ssl-mode=disable", "--pg-search", "--convert-search",
            f"--db-pool-size={pool_size}",
        ]
