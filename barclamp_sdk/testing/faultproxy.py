"""A loopback HTTP proxy that injects real network faults.

Put it between a client and a real server to prove retries work::

    with FaultProxy(server.url) as proxy:
        proxy.fail_first(3, "503")
        client = ChefClient(config.with_options(server_url=proxy.url))

Fault kinds:

``503`` / ``502`` / ``504``
    answer that status without forwarding;
``429``
    answer 429 with ``Retry-After`` (``retry_after`` seconds);
``drop``
    close the connection before forwarding (the server never sees it);
``drop_after``
    forward, then close the connection instead of answering (the server
    did the work but the client never hears: the case that makes retried
    creates dangerous);
``latency``
    forward after ``latency`` seconds;
``413``
    answer 413 (request entity too large) without forwarding: a write the
    server refuses for good (not retried).

:meth:`FaultProxy.fail_matching` aims a fault at one request (say, the PUT
of one document) instead of the next ones.

``production=ProductionPersonality(...)`` makes goiardi behind the proxy
behave like Chef Infra Server (organizations, search lag and window, size
limit, API versions, load shedding, licence): see
:mod:`barclamp_sdk.testing.production`.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import sys
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from barclamp_sdk.testing.production import Answer, ProductionPersonality

FAULT_KINDS = ("502", "503", "504", "429", "413", "drop", "drop_after", "latency")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "te", "trailers", "transfer-encoding", "upgrade", "content-length", "host"}


class FaultProxy:
    """Forwards HTTP to ``upstream`` and injects faults by plan."""

    def __init__(self, upstream: str, *, seed: int | None = None,
                 latency: float = 0.2, retry_after: float = 0.2,
                 production: ProductionPersonality | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.latency = latency
        self.retry_after = retry_after
        #: erchef's behaviour in front of goiardi, or None (a plain proxy).
        self.production = production
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._first: list[str] = []
        self._rate = 0.0
        self._rate_kinds: tuple[str, ...] = ()
        self._always: str | None = None
        self._matching: list[tuple[str, str, str]] = []
        self.requests = 0
        self.faults: Counter[str] = Counter()
        #: (method, path) of every request received, in order.
        self.seen: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        #: Requests being handled (read, maybe forwarded, not yet answered or dropped).
        self._handling = 0
        self._settled = threading.Condition(self._lock)

    # -- plans --------------------------------------------------------------------

    def fail_first(self, count: int, kind: str = "503") -> FaultProxy:
        """The next ``count`` requests get ``kind``."""
        _check(kind)
        with self._lock:
            self._first.extend([kind] * count)
        return self

    def fail_matching(self, method: str, path: str, kind: str = "503", count: int = 1) -> FaultProxy:
        """The next ``count`` ``method`` requests whose path contains ``path`` get ``kind``."""
        _check(kind)
        with self._lock:
            self._matching.extend([(method.upper(), path, kind)] * count)
        return self

    def fail_rate(self, rate: float, kinds: Iterable[str] = ("503", "drop", "latency")) -> FaultProxy:
        """Each request gets a random fault of ``kinds`` with probability ``rate``."""
        kinds = tuple(kinds)
        for kind in kinds:
            _check(kind)
        with self._lock:
            self._rate, self._rate_kinds = rate, kinds
        return self

    def fail_always(self, kind: str | None = "503") -> FaultProxy:
        """Every request gets ``kind`` (a permanent outage); None ends it."""
        if kind is not None:
            _check(kind)
        with self._lock:
            self._always = kind
        return self

    def heal(self) -> FaultProxy:
        """Stop injecting faults."""
        with self._lock:
            self._first.clear()
            self._matching.clear()
            self._rate = 0.0
            self._always = None
        return self

    def _next_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            self.seen.append((method, path))
            aimed = next((i for i, (m, p, _) in enumerate(self._matching) if m == method and p in path), None)
            if aimed is not None:
                fault: str | None = self._matching.pop(aimed)[2]
            elif self._always:
                fault = self._always
            elif self._first:
                fault = self._first.pop(0)
            elif self._rate and self._random.random() < self._rate:
                fault = self._random.choice(self._rate_kinds)
            else:
                fault = None
            if fault:
                self.faults[fault] += 1
            return fault

    def after_forward(self, method: str, path: str) -> bool:
        """Called once the server answered a forwarded request; True drops the answer (a hook)."""
        return False

    def observed(self, method: str, path: str, status: int, body: bytes) -> None:
        """Called with each forwarded request and the server's status, once answered (a hook, for
        recorders: called from many threads)."""

    # -- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._lock:
                for sock in list(self._sockets):
                    _reset(sock)
            self._server = None

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until no request is being handled (nothing more reaches the server from those
        already received, say of a killed client); AssertionError after ``timeout`` seconds."""
        with self._settled:
            if not self._settled.wait_for(lambda: self._handling == 0, timeout):
                raise AssertionError(f"{self._handling} request(s) still in the proxy after {timeout:.0f}s")

    def __enter__(self) -> FaultProxy:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (reset, killed) is no error of the proxy's; others are printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _check(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a crashed peer or a dropped link would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's
    # algorithm and delayed ACKs add 40 ms to every answer.
    disable_nagle_algorithm = True
    owner: FaultProxy

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None
        with self.owner._lock:
            self.owner._sockets.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._sockets.discard(self.connection)
        if self._upstream is not None:
            self._upstream.close()
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _forward(self, body: bytes, method: str | None = None, path: str | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        source = self.headers.items() if headers is None else headers.items()
        headers = {k: v for k, v in source if k.lower() not in _HOP_BY_HOP}
        for attempt in range(2):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    self.owner.upstream_host, self.owner.upstream_port, timeout=60)
            try:
                self._upstream.request(method or self.command, path or self.path, body=body or None,
                                       headers=headers)
                response = self._upstream.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        with self.owner._lock:
            self.owner._handling += 1
        try:
            self._relay()
        finally:
            with self.owner._settled:
                self.owner._handling -= 1
                self.owner._settled.notify_all()

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.owner._next_fault(self.command, self.path)
        if fault == "drop":
            self.close_connection = True
            _reset(self.connection)
            return
        if fault in ("502", "503", "504", "429", "413"):
            payload = b'{"error":["injected fault"]}'
            self.send_response(int(fault))
            if fault == "429":
                self.send_header("Retry-After", f"{self.owner.retry_after:g}")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if fault == "latency":
            time.sleep(self.owner.latency)
        try:
            if self.owner.production is not None:
                answer = self._production(body)
                if isinstance(answer, Answer):
                    self._answer(answer.status, list(answer.headers.items())
                                 + [("Content-Type", "application/json")], answer.payload())
                    return
                status, headers, payload = answer
            else:
                status, headers, payload = self._forward(body)
        except (http.client.HTTPException, OSError):
            self.close_connection = True
            _reset(self.connection)
            return
        self.owner.observed(self.command, self.path, status, body)
        if fault == "drop_after" or self.owner.after_forward(self.command, self.path):
            self.close_connection = True
            _reset(self.connection)
            return
        self._answer(status, headers, payload)

    def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP and key.lower() not in ("date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _production(self, body: bytes) -> Answer | tuple[int, list[tuple[str, str]], bytes]:
        """Apply the production personality to this request (see its module)."""
        personality = self.owner.production
        assert personality is not None
        if not personality.enter():
            return personality.busy()
        try:
            decision = personality.admit(self.command, self.path, self.headers, body)
            if isinstance(decision, Answer):
                return decision
            if personality.hold is not None:
                personality.hold.wait(60)
            previous = None
            write = decision.write
            if write is not None and personality.needs_previous(write, self.command):
                object_path = decision.path.split("?", 1)[0]
                status, _, answer = self._forward(
                    b"", "GET", object_path,
                    personality.sign(self.headers.get("X-Ops-Userid", ""), "GET", object_path))
                previous = json.loads(answer) if status == 200 else None
            status, headers, payload = self._forward(body, self.command, decision.path, decision.headers)
            if write is not None:
                personality.record_write(write, self.command, status, previous, payload)
            if decision.search is not None:
                upstream = f"http://{self.owner.upstream_host}:{self.owner.upstream_port}"
                status, payload = personality.search_answer(decision.search, status, payload, upstream)
            headers = [(k, v) for k, v in headers if k.lower() != "x-goiardi"]
            return status, headers, payload
        finally:
            personality.leave()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
