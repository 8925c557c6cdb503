"""Listeners on 127.0.0.1 that record whatever reaches them (to prove nothing does).

:class:`Tripwire` holds a TCP and a UDP socket on one port and never answers:
anything a client sends (a TCP connection, an IPMI datagram) waits in the
kernel's queues, and :meth:`Tripwire.received` drains them without blocking.
:class:`TlsImpostor` answers TLS with its own certificate, as a BMC replaced
by an impostor would, and records every byte sent after the handshake.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from barclamp_sdk.testing.bmcpeers import fresh_port
from barclamp_sdk.testing.tls import self_signed_certificate


class Tripwire:
    """A TCP and a UDP socket on 127.0.0.1:<port> that only listen."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or fresh_port()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.tcp.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.setblocking(False)
        self.connections = 0
        self.data = b""

    def received(self) -> tuple[int, bytes]:
        """(TCP connections, bytes over TCP and UDP) that arrived so far."""
        while True:
            try:
                connection, _ = self.tcp.accept()
            except BlockingIOError:
                break
            self.connections += 1
            connection.setblocking(False)
            with connection, contextlib.suppress(BlockingIOError, ConnectionError):
                while chunk := connection.recv(65536):
                    self.data += chunk
        while True:
            try:
                self.data += self.udp.recv(65536)
            except BlockingIOError:
                break
        return self.connections, self.data

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()

    def __enter__(self) -> Tripwire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TlsImpostor:
    """A TLS server with its own certificate on 127.0.0.1:<port>, recording what clients send."""

    def __init__(self, directory: str | Path, port: int) -> None:
        cert, key = self_signed_certificate(directory, "impostor")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.port = port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.handshakes = 0
        self.data = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-impostor", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                plain, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            plain.settimeout(30)
            try:
                with self.context.wrap_socket(plain, server_side=True) as tls:
                    self.handshakes += 1
                    while chunk := tls.recv(65536):  # until the client hangs up
                        self.data += chunk
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.listener.close()
