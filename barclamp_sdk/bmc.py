"""Out-of-band access to a machine's BMC, with pyghmi behind it.

:class:`BMC` is the library's own interface (barclamps never import pyghmi):
Redfish for BIOS settings, IPMI for power and the next boot device. This is
the one place that knows pyghmi's quirks:

* pyghmi caches Redfish GETs for 30 s on a session, so settings are read back
  for verification on a fresh session;
* ``ipmi_sim`` (and some real BMCs) never report the boot device back, so a
  successful "set next boot" answer is taken as the result;
* an unreachable IPMI BMC surfaces as ``IpmiException(None)`` after pyghmi's
  own retries, an unreachable Redfish one as a raw socket error;
* pyghmi caches IPMI sessions: a second ``Command`` for a BMC it already has
  a session with waits forever, and logging out breaks the cached session.
  So one IPMI command object per BMC and credentials lives for the process,
  used by one caller at a time, and is dropped after a failure;
* Redfish BMCs present self-signed certificates: :func:`redfish_certificate_sha256`
  reads one without logging in (to pin it when an operator confirms the
  BMC), and a pinned one must match on every later connection, checked
  before any credentials are sent.

Every failure is a :class:`~barclamp_sdk.errors.BMCError` whose ``kind`` is
``unreachable``, ``auth``, ``rejected``, ``certificate`` or ``failed``, and whose message is
one line.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from barclamp_sdk.errors import BMCError

DEFAULT_REDFISH_PORT = 443

_IPMI: dict[tuple[str, int, str, str], tuple[Any, threading.Lock]] = {}
_IPMI_GUARD = threading.Lock()
#: pyghmi's session set-up is not safe from several threads at once: two logins to two BMCs
#: deadlocked on its internal locks (seen in CI, bios apply of 2 machines). One login at a time.
_IPMI_LOGIN = threading.Lock()


@dataclass(frozen=True)
class BMCEndpoint:
    """Where a BMC is and how to log in."""

    address: str
    username: str
    password: str
    ipmi_port: int = 623
    redfish_port: int | None = None
    redfish_system: str | None = None
    certificate_sha256: str | None = None  # pinned Redfish certificate

    def __repr__(self) -> str:  # never print the password
        return f"BMCEndpoint({self.address!r}, user={self.username!r})"


def _error(kind: str, endpoint: BMCEndpoint, what: str, detail: str) -> BMCError:
    error = BMCError(f"BMC {endpoint.address}: {what}: {detail}")
    error.kind = kind  # type: ignore[attr-defined]
    return error


def _classify(exc: BaseException, endpoint: BMCEndpoint, what: str, port: int) -> BMCError:
    text = str(exc) if exc.args and exc.args[0] is not None else ""
    lowered = text.lower()
    if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError, OSError)) and not isinstance(exc, BMCError):
        return _error("unreachable", endpoint, what, f"no answer on port {port} ({type(exc).__name__})")
    if not text or "timeout" in lowered or "timed out" in lowered or "unable to establish" in lowered:
        return _error("unreachable", endpoint, what, f"no answer on port {port}")
    if any(word in lowered for word in ("password", "access denied", "unauthorized", "unauthorised")):
        return _error("auth", endpoint, what, "the BMC refused the user name or password")
    if "not a valid value" in lowered or "read only" in lowered or "generalerror" in lowered or "invalid" in lowered:
        return _error("rejected", endpoint, what, f"the BMC rejected the value ({text})")
    return _error("failed", endpoint, what, text or type(exc).__name__)


def redfish_certificate_sha256(address: str, port: int | None = None, *, timeout: float = 10.0) -> str:
    """SHA-256 (hex) of the certificate a Redfish BMC presents; no credentials are sent."""
    port = port or DEFAULT_REDFISH_PORT
    context = ssl.create_default_context()  # as pyghmi connects: self-signed certificates are the rule
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=timeout) as plain, \
                context.wrap_socket(plain) as tls:
            certificate = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        endpoint = BMCEndpoint(address, "", "", redfish_port=port)
        raise _error("unreachable", endpoint, "reading its Redfish certificate",
                     f"no TLS answer on port {port} ({type(exc).__name__})") from None
    if not certificate:
        raise _error("failed", BMCEndpoint(address, "", "", redfish_port=port), "reading its Redfish certificate",
                     "it presented no certificate")
    return hashlib.sha256(certificate).hexdigest()


class BMC:
    """One machine's BMC: BIOS settings (Redfish), power and boot (IPMI)."""

    def __init__(self, endpoint: BMCEndpoint) -> None:
        self.endpoint = endpoint
        #: SHA-256 of the Redfish certificate seen (to pin it next time).
        self.certificate_sha256: str | None = None

    # -- Redfish -------------------------------------------------------------------

    def _verify(self, certificate: bytes) -> bool:
        seen = hashlib.sha256(certificate).hexdigest()
        self.certificate_sha256 = seen
        pinned = self.endpoint.certificate_sha256
        return pinned is None or pinned == seen

    def _redfish(self) -> Any:
        from pyghmi.redfish.command import Command

        endpoint = self.endpoint
        port = endpoint.redfish_port or DEFAULT_REDFISH_PORT
        try:
            return Command(endpoint.address, endpoint.username, endpoint.password,
                           verifycallback=self._verify, port=port, sysurl=endpoint.redfish_system)
        except Exception as exc:  # noqa: BLE001 - pyghmi raises many kinds
            pinned = self.endpoint.certificate_sha256
            if pinned and self.certificate_sha256 not in (None, pinned):
                raise _error("certificate", endpoint, "Redfish",
                             f"its certificate changed (sha256 {self.certificate_sha256[:16]}..., pinned "
                             f"{pinned[:16]}... when the BMC was confirmed); nothing was sent; if the BMC was "
                             "replaced, check it and confirm it again (`crowbar machines bmc confirm NAME`)") from None
            raise _classify(exc, endpoint, "Redfish", port) from None

    def bios_settings(self) -> dict[str, Any]:
        """Current BIOS attributes (pending values where a change is staged)."""
        client = self._redfish()
        try:
            settings = client.get_system_configuration()
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.endpoint, "reading BIOS settings", self.endpoint.redfish_port or 443) from None
        return {name: info.get("value") for name, info in settings.items()}

    def set_bios_settings(self, changes: dict[str, Any]) -> None:
        """Stage BIOS attribute changes (applied by the BMC, or at next boot)."""
        if not changes:
            return
        client = self._redfish()
        try:
            client.set_system_configuration(dict(changes))
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, self.endpoint, f"setting {', '.join(sorted(changes))}",
                            self.endpoint.redfish_port or 443) from None

    # -- IPMI ------------------------------------------------------------------------

    def _ipmi_call(self, what: str, call: Callable[[Any], Any]) -> Any:
        """Run ``call(command)`` on this BMC's one IPMI session."""
        from pyghmi.ipmi.command import Command

        endpoint = self.endpoint
        key = (endpoint.address, endpoint.ipmi_port, endpoint.username, endpoint.password)
        with _IPMI_GUARD:
            if key not in _IPMI:
                _IPMI[key] = (None, threading.Lock())
            command, lock = _IPMI[key]
        with lock:
            try:
                if command is None:
                    with _IPMI_LOGIN:
                        command = Command(bmc=endpoint.address, userid=endpoint.username,
                                          password=endpoint.password, port=endpoint.ipmi_port)
                    _IPMI[key] = (command, lock)
                return call(command)
            except Exception as exc:  # noqa: BLE001 - pyghmi raises many kinds
                _IPMI[key] = (None, lock)
                raise _classify(exc, endpoint, what, endpoint.ipmi_port) from None

    def power_state(self) -> str:
        """``on`` or ``off``."""
        return str(self._ipmi_call("reading the power state", lambda c: c.get_power())["powerstate"])

    def boot_from_network_next(self) -> None:
        """Make the next boot a network (PXE) boot."""
        answer = self._ipmi_call("setting the next boot device",
                                 lambda c: c.set_bootdev("network", persist=False))
        if answer.get("bootdev") != "network":
            raise _error("failed", self.endpoint, "setting the next boot device", f"the BMC answered {answer}")
