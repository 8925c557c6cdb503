"""Real BMC peers on 127.0.0.1: ``ipmi_sim`` (Debian openipmi) and sushy-tools.

:class:`IpmiPeer` runs one ``ipmi_sim`` per machine: power and boot device,
kept in files by the chassis script (``power_state``, ``boot_device`` read
them, since ipmi_sim never reports the boot device back). :class:`RedfishPeer`
runs one sushy-tools emulator over HTTPS serving several systems, with BIOS
settings (see :mod:`barclamp_sdk.testing.redfish_emulator`) and, when a
password is given, basic authentication that refuses others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import bcrypt
import requests
import urllib3

from barclamp_sdk.errors import ConfigurationError, CrowbarError
from barclamp_sdk.local import free_port
from barclamp_sdk.testing.tls import self_signed_certificate

#: A Dell PowerEdge as it leaves the factory (before barclamp-sdk sets it).
FACTORY_BIOS = {
    "BootMode": "Bios", "SysProfile": "PerfPerWattOptimizedDapc", "LogicalProc": "Enabled",
    "ProcVirtualization": "Disabled", "SriovGlobalEnable": "Disabled", "ProcTurboMode": "Enabled",
    "EmbSata": "RaidMode", "MemOpMode": "OptimizerMode", "ProcX2Apic": "Enabled",
}

_CHASSIS = """#!/bin/sh
# ipmi_sim runs: chassis.sh get power|boot ... / chassis.sh set power 1 boot pxe ...
dir="$(dirname "$0")"
op="$1"; shift
case "$op" in
  get) for item in "$@"; do
         case "$item" in
           power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)";;
           boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)";;
         esac
       done;;
  set) while [ $# -gt 1 ]; do
         case "$1" in power) echo "$2" > "$dir/power";; boot) echo "$2" > "$dir/boot";; esac
         shift 2
       done;;
esac
"""

_EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
"""


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


_HANDED_OUT: set[int] = set()


def _worker_share() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker (``PYTEST_XDIST_WORKER=gwN``), (0, 1) outside one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return int(worker[2:]) % int(count), int(count)
    return 0, 1


def fresh_port() -> int:
    """A port free for TCP and UDP, never handed out before in this process.

    pyghmi keeps IPMI sessions per address and port for the life of the
    process; a new peer on an old peer's port would meet a stale session.
    Under pytest-xdist, only ports of this worker's share (port // 2 mod
    the number of workers): a peer never starts on a port another worker has
    just been handed, nor takes for its own a peer of another worker's.
    """
    index, count = _worker_share()
    while True:
        port = free_port()
        if port in _HANDED_OUT or (port // 2) % count != index:  # bind() hands out odd ports only
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def _get(url: str, **kwargs: Any) -> requests.Response:
    """GET from a peer's own self-signed HTTPS endpoint (not verified, on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        return requests.get(url, verify=False, timeout=kwargs.pop("timeout", 10), **kwargs)


class IpmiPeer:
    """One machine's IPMI BMC: ``ipmi_sim`` on 127.0.0.1:<port> (UDP)."""

    def __init__(self, directory: str | Path, *, username: str = "admin", password: str = "password",
                 port: int | None = None, detach: bool = False) -> None:
        """``detach`` lets the peer outlive this process (its own session)."""
        if shutil.which("ipmi_sim") is None:
            raise ConfigurationError("ipmi_sim is not installed; install it with: sudo apt-get install -y openipmi")
        self.directory = Path(directory)
        self.username = username
        self.password = password
        self.port = port or fresh_port()
        self.detach = detach
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> IpmiPeer:
        self.directory.mkdir(parents=True, exist_ok=True)
        chassis = self.directory / "chassis.sh"
        chassis.write_text(_CHASSIS)
        chassis.chmod(0o755)
        (self.directory / "power").write_text("0\n")
        guid = uuid.uuid4().hex
        (self.directory / "lan.conf").write_text(
            f'name "bmc{self.port}"\nset_working_mc 0x20\n  startlan 1\n'
            f"    addr 127.0.0.1 {self.port}\n    priv_limit admin\n"
            + "".join(f"    allowed_auths_{p} none md2 md5 straight\n"
                      for p in ("callback", "user", "operator", "admin"))
            + f"    guid {guid}\n  endlan\n  chassis_control \"{chassis}\"\n"
            f'  user 2 true "{self.username}" "{self.password}" admin 10 none md2 md5 straight\n')
        (self.directory / "sim.emu").write_text(_EMU)
        state = self.directory / "state"
        state.mkdir(exist_ok=True)
        log = open(self.directory / "ipmi_sim.out", "ab")
        try:
            self.process = subprocess.Popen(
                ["ipmi_sim", "-c", str(self.directory / "lan.conf"), "-f", str(self.directory / "sim.emu"),
                 "-s", str(state), "-n"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=self.detach)
        finally:
            log.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # ready once it holds its UDP port
            if self.process.poll() is not None:
                break
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.port))
                except OSError:
                    return self
            time.sleep(0.02)
        self.stop()
        raise CrowbarError(f"ipmi_sim did not start on UDP port {self.port}; see {self.directory / 'ipmi_sim.out'}")

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    @property
    def power_state(self) -> str:
        value = (self.directory / "power").read_text().strip()
        return "on" if value == "1" else "off"

    @property
    def boot_device(self) -> str:
        path = self.directory / "boot"
        return path.read_text().strip() if path.exists() else "default"


class RedfishPeer:
    """sushy-tools' emulator over HTTPS, one process for several systems."""

    def __init__(self, directory: str | Path, systems: dict[str, dict[str, Any]], *,
                 username: str = "admin", password: str | None = "password", port: int | None = None,
                 registry: dict[str, list[str]] | None = None, detach: bool = False) -> None:
        """``systems`` maps a name to its initial ``bios`` (attribute -> value);
        ``registry`` limits the attributes and values the BMC accepts;
        ``detach`` lets the emulator outlive this process."""
        self.registry = registry
        self.detach = detach
        self.directory = Path(directory)
        self.systems = {name: {"uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                               "bios": dict(FACTORY_BIOS, **settings.get("bios", {}))}
                        for name, settings in systems.items()}
        self.username = username
        self.password = password
        self.port = port or fresh_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def system_path(self, name: str) -> str:
        """What pyghmi calls ``sysurl`` for a system."""
        return f"/redfish/v1/Systems/{self.systems[name]['uuid']}"

    def start(self, timeout: float = 20.0) -> RedfishPeer:
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self_signed_certificate(self.directory, "redfish")
        state = self.directory / "state"
        shutil.rmtree(state, ignore_errors=True)  # the fake driver persists state
        fake = [{"uuid": s["uuid"], "name": name, "power_state": "Off", "external_notifier": False,
                 "nics": [], "bios": s["bios"], "bios_defaults": dict(s["bios"])}
                for name, s in self.systems.items()]
        config = [
            "SUSHY_EMULATOR_FAKE_DRIVER = True",
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}",
            f"SUSHY_EMULATOR_SSL_CERT = {str(cert)!r}",
            f"SUSHY_EMULATOR_SSL_KEY = {str(key)!r}",
            f"SUSHY_EMULATOR_STATE_DIR = {str(state)!r}",
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}",
        ]
        if self.registry is not None:
            config.append(f"SUSHY_EMULATOR_BIOS_REGISTRY = {self.registry!r}")
        if self.password is not None:
            digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
            auth = self.directory / "htpasswd"
            auth.write_text(f"{self.username}:{digest}\n")
            config.append(f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}")
        conf = self.directory / "emulator.conf"
        conf.write_text("\n".join(config) + "\n")
        log = open(self.directory / "emulator.out", "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "barclamp_sdk.testing.redfish_emulator", "--config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "ignore"}, start_new_session=self.detach)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(requests.RequestException):
                if _get(self.url + "/redfish/v1/", timeout=1).status_code < 500:
                    return self
            time.sleep(0.05)
        self.stop()
        raise CrowbarError(f"the Redfish emulator did not start; see {self.directory / 'emulator.out'}")

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def bios(self, name: str) -> dict[str, Any]:
        """A system's BIOS attributes as the BMC holds them now."""
        auth = (self.username, self.password) if self.password is not None else None
        response = _get(f"{self.url}{self.system_path(name)}/BIOS", auth=auth)
        response.raise_for_status()
        return dict(response.json().get("Attributes") or {})


class BmcLab:
    """BMC peers for several machines: an ipmi_sim each, one Redfish emulator.

    ``faults`` maps a machine to ``"wrong-password"`` (its IPMI BMC has
    another password), ``"unreachable"`` (its BMC ports answer nothing) or
    ``"strict"`` (its Redfish BMC accepts only factory BIOS values).
    ``detach`` lets the peers outlive this process; hand :meth:`pids` to
    :meth:`~barclamp_sdk.local.LocalChefServer.register_peers` so that
    ``crowbar local stop`` ends them too.
    """

    def __init__(self, directory: str | Path, names: list[str], *, username: str = "admin",
                 password: str = "password", faults: dict[str, str] | None = None, detach: bool = False) -> None:
        self.directory = Path(directory)
        self.detach = detach
        self.names = list(names)
        self.username = username
        self.password = password
        self.faults = dict(faults or {})
        self.ipmi: dict[str, IpmiPeer] = {}
        self.redfish: RedfishPeer | None = None
        self.strict: RedfishPeer | None = None
        self._dead_ports: dict[str, tuple[int, int]] = {}

    def start(self) -> BmcLab:
        reachable = [n for n in self.names if self.faults.get(n) != "unreachable"]
        for name in reachable:
            password = "not-" + self.password if self.faults.get(name) == "wrong-password" else self.password
            self.ipmi[name] = IpmiPeer(self.directory / "ipmi" / name, username=self.username,
                                       password=password, detach=self.detach).start()
        normal = {n: {} for n in reachable if self.faults.get(n) != "strict"}
        strict = {n: {} for n in reachable if self.faults.get(n) == "strict"}
        if normal:
            self.redfish = RedfishPeer(self.directory / "redfish", normal, username=self.username,
                                       password=self.password, detach=self.detach).start()
        if strict:
            registry = {k: [v] for k, v in FACTORY_BIOS.items()}  # only factory values allowed
            self.strict = RedfishPeer(self.directory / "redfish-strict", strict, username=self.username,
                                      password=self.password, registry=registry, detach=self.detach).start()
        for name in self.names:
            if self.faults.get(name) == "unreachable":
                self._dead_ports[name] = (fresh_port(), fresh_port())
        return self

    def wall(self, name: str) -> dict[str, Any]:
        """What machine ``name`` reports about its BMC under ``crowbar_wall``."""
        if name in self._dead_ports:
            ipmi_port, redfish_port = self._dead_ports[name]
            return {"bmc": {"address": "127.0.0.1", "ipmi_port": ipmi_port, "redfish_port": redfish_port,
                            "redfish_system": "/redfish/v1/Systems/none"}}
        peer = self.strict if self.strict and name in self.strict.systems else self.redfish
        assert peer is not None
        return {"bmc": {"address": "127.0.0.1", "ipmi_port": self.ipmi[name].port,
                        "redfish_port": peer.port, "redfish_system": peer.system_path(name)}}

    def bios(self, name: str) -> dict[str, Any]:
        peer = self.strict if self.strict and name in self.strict.systems else self.redfish
        assert peer is not None
        return peer.bios(name)

    def pids(self) -> list[int]:
        """The process ids of the running peers."""
        processes = [p.process for p in self.ipmi.values()] + [r.process for r in (self.redfish, self.strict) if r]
        return [p.pid for p in processes if p is not None and p.poll() is None]

    def stop(self) -> None:
        for peer in self.ipmi.values():
            peer.stop()
        for redfish in (self.redfish, self.strict):
            if redfish is not None:
                redfish.stop()

    def __enter__(self) -> BmcLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
