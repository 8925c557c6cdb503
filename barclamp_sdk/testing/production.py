"""A production Chef server's personality for the loopback proxy.

goiardi forgives what Chef Infra Server (erchef, PostgreSQL, OpenSearch)
does not. :class:`ProductionPersonality`, given to
:class:`~barclamp_sdk.testing.faultproxy.FaultProxy`, makes the real goiardi
behind the proxy behave like one::

    personality = ProductionPersonality(keys={"admin": key_path}, window=500)
    with FaultProxy(server.url, production=personality) as proxy:
        client = ChefClient(config.with_options(
            server_url=proxy.url + "/organizations/" + personality.organization))

What changes (each a knob; the defaults are erchef's):

* every path lives under ``/organizations/ORG`` (404 otherwise); the proxy
  checks the client's signature over the full path and re-signs the
  request, without the prefix, with the same client's key (goiardi verifies
  the path it sees), so ``keys`` must hold every client that talks through
  it (401 naming the client otherwise);
* ``X-Ops-Server-API-Version`` outside 0-2: 406 with the supported range;
* ``license_invalid``: 403 ``invalid-license`` on every call;
* more than ``max_in_flight`` requests at once: 503;
* POST/PUT bodies over ``max_request_size`` bytes: 413
  ``{"error": "JSON must be no more than N bytes."}``;
* search: objects written through the proxy reach search ``lag`` seconds
  later (until then a search shows the previous version, hides a new
  object and still shows a deleted one), rows come in a stable order that
  is not by name, ``sort`` is ignored, ``total`` is capped at ``window``,
  and ``start + rows`` over ``window`` fails with 500 as OpenSearch's
  ``max_result_window`` does (chef-server#2163);
* goiardi's ``X-Goiardi`` header is not passed on (clients see a Chef
  Server).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from barclamp_sdk.chef.auth import ChefSigner, canonical_path, load_private_key

API_MIN, API_MAX = 0, 2
CLOCK_SKEW = 900.0
#: Indexes whose objects are named by ``name``; every other index is a data bag.
NAMED_INDEXES = {"node": "nodes", "role": "roles", "client": "clients", "environment": "environments"}
_COLLECTIONS = {v: k for k, v in NAMED_INDEXES.items()}


@dataclass
class Answer:
    """A response the personality gives instead of forwarding."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass
class Forward:
    """How to forward a request: new path, new headers, search handling."""

    path: str
    headers: dict[str, str]
    search: _Search | None = None
    write: tuple[str, str, Any] | None = None  # (index, key, new doc or None)


@dataclass
class _Search:
    index: str
    query: str
    start: int
    rows: int
    keys: dict[str, list[str]] | None  # partial search aliases, or None


class ProductionPersonality:
    """erchef's behaviour, applied by a :class:`FaultProxy` (see the module doc)."""

    def __init__(
        self,
        *,
        keys: Mapping[str, str | Path | bytes | rsa.RSAPrivateKey],
        organization: str = "crowbar",
        lag: float = 1.0,
        window: int = 10_000,
        max_request_size: int = 1_000_000,
        max_in_flight: int = 20,
        license_invalid: bool = False,
        hold: threading.Event | None = None,
        seed: str = "opensearch",
        ranges: bool = True,
    ) -> None:
        self.organization = organization
        self.lag = lag
        self.window = window
        self.max_request_size = max_request_size
        self.max_in_flight = max_in_flight
        self.license_invalid = license_invalid
        #: While set to an unset Event, forwarded requests wait for it (in flight).
        self.hold = hold
        self.seed = seed
        #: False: ``AND field:[a TO b]`` clauses are dropped, as goiardi --pg-search ignores them.
        self.ranges = ranges
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        for name, key in keys.items():
            self.add_key(name, key)
        self._lock = threading.Lock()
        self.in_flight = 0
        #: What the personality refused, by reason (``"503"``, ``"window"`` ...).
        self.refused: dict[str, int] = {}
        #: X-Ops-Server-API-Version of every request, in order.
        self.api_versions: list[str | None] = []
        # (index, key) -> [base doc or None, [(time, doc or None), ...]]
        self._pending: dict[tuple[str, str], list[Any]] = {}

    def forget(self) -> None:
        """Drop the record of recent writes (the server was emptied behind the proxy)."""
        with self._lock:
            self._pending.clear()
            self.refused.clear()
            self.api_versions.clear()

    def add_key(self, name: str, key: str | Path | bytes | rsa.RSAPrivateKey) -> None:
        """Let client ``name`` (PEM text, bytes, a path or a key) talk through the proxy."""
        if isinstance(key, rsa.RSAPrivateKey):
            self._keys[name] = key
            return
        if isinstance(key, Path) or (isinstance(key, str) and not key.lstrip().startswith("-----")):
            key = Path(key).read_bytes()
        self._keys[name] = load_private_key(key, source=f"key of {name}")

    @property
    def prefix(self) -> str:
        return f"/organizations/{self.organization}"

    def _refuse(self, reason: str, status: int, body: Any, **headers: str) -> Answer:
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        return Answer(status, body, dict(headers))

    # -- admission ---------------------------------------------------------------

    def enter(self) -> bool:
        """Count a request in flight; False when over ``max_in_flight``."""
        with self._lock:
            if self.in_flight >= self.max_in_flight:
                self.refused["503"] = self.refused.get("503", 0) + 1
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def busy(self) -> Answer:
        return Answer(503, {"error": ["An error occurred while trying to find  'requestor'. "
                                      "Please contact support."]})

    def admit(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Answer | Forward:
        """Check one request as erchef would; what to answer, or how to forward it."""
        path, _, query = raw_path.partition("?")
        version = headers.get("X-Ops-Server-API-Version")
        with self._lock:
            self.api_versions.append(version)
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            if path.startswith("/organizations/"):
                org = path.split("/")[2]
                return self._refuse("404", 404, {"error": [f"organization '{org}' does not exist."]})
            return self._refuse("404", 404, {"error": ["Not Found"]})
        if version is not None:
            try:
                number = int(version)
            except ValueError:
                number = -1
            if not API_MIN <= number <= API_MAX:
                return self._refuse("406", 406, {
                    "error": "invalid-x-ops-server-api-version",
                    "message": f"Specified version {version} not supported",
                    "min_version": API_MIN, "max_version": API_MAX})
        if self.license_invalid:
            warning = ("Your Chef Infra Server license is not valid; contact Chef to obtain "
                       "a license")
            return self._refuse("403", 403, {"error": warning, "message": "invalid-license"},
                                **{"X-Ops-License": json.dumps({"licenseType": "commercial",
                                                                "gracePeriod": False})})
        inner = path[len(self.prefix):] or "/"
        forwarded, problem = self._resign(method, path, inner, headers, body)
        if problem is not None:
            return problem
        if method in ("POST", "PUT") and len(body) > self.max_request_size:
            return self._refuse("413", 413, {"error": f"JSON must be no more than "
                                                      f"{self.max_request_size} bytes."})
        target = inner + (f"?{query}" if query else "")
        search = self._parse_search(method, inner, query, body)
        if search is not None:
            if search.start + search.rows > self.window:
                # OpenSearch refuses from + size > max_result_window; erchef answers 500
                return self._refuse("window", 500, {"error": ["internal search error"]})
            query_text = search.query if self.ranges else _RANGE_CLAUSE.sub("", search.query)
            params = {"q": query_text, "start": 0, "rows": 1_000_000}
            target = inner + "?" + urlencode(params)
        return Forward(target, forwarded, search, self._write_of(method, inner, body))

    # -- signatures --------------------------------------------------------------

    def sign(self, user: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
        """Headers of a request the proxy itself sends upstream as ``user``."""
        key = self._keys.get(user) or next(iter(self._keys.values()))
        signer = ChefSigner(user if user in self._keys else next(iter(self._keys)), key)
        return {"Accept": "application/json", **signer.headers_for(method, path, body)}

    def _resign(self, method: str, signed_path: str, inner: str, headers: Mapping[str, str],
                body: bytes) -> tuple[dict[str, str], Answer | None]:
        user = headers.get("X-Ops-Userid", "")
        key = self._keys.get(user)
        if key is None:
            return {}, self._refuse("401", 401, {"error": [
                f"Failed to authenticate as {user}: the production proxy holds no key for "
                f"that client (give it with keys= or add_key())"]})
        sign = headers.get("X-Ops-Sign", "")
        match = re.search(r"version=(\d\.\d)", sign)
        version = match.group(1) if match else ""
        timestamp = headers.get("X-Ops-Timestamp", "")
        if not self._signature_ok(key, version, method, signed_path, headers, body):
            return {}, self._refuse("401", 401, {"error": [f"Invalid signature for user or client '{user}'"]})
        try:
            when = float(calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            when = 0.0
        if abs(time.time() - when) > CLOCK_SKEW:
            return {}, self._refuse("401", 401, {"error": [
                f"Failed to authenticate as {user}. Synchronize the clock on your host."]})
        api = headers.get("X-Ops-Server-API-Version") or "0"
        signer = ChefSigner(user, key, version=version if version in ("1.0", "1.1", "1.3") else "1.3",
                            server_api_version=int(api))
        out = {k: v for k, v in headers.items() if not k.lower().startswith("x-ops-authorization-")
               and k.lower() not in ("x-ops-sign", "x-ops-userid", "x-ops-timestamp", "x-ops-content-hash")}
        out.update(signer.headers_for(method, inner, body))
        return out, None

    @staticmethod
    def _signature_ok(key: rsa.RSAPrivateKey, version: str, method: str, path: str,
                      headers: Mapping[str, str], body: bytes) -> bool:
        parts = []
        index = 1
        while (part := headers.get(f"X-Ops-Authorization-{index}")) is not None:
            parts.append(part)
            index += 1
        try:
            signature = base64.b64decode("".join(parts))
        except ValueError:
            return False
        path = canonical_path(path)
        user = headers.get("X-Ops-Userid", "")
        timestamp = headers.get("X-Ops-Timestamp", "")
        public = key.public_key()
        if version == "1.3":
            content = base64.b64encode(hashlib.sha256(body).digest()).decode()
            canonical = (f"Method:{method}\nPath:{path}\nX-Ops-Content-Hash:{content}\n"
                         f"X-Ops-Sign:version=1.3\nX-Ops-Timestamp:{timestamp}\nX-Ops-UserId:{user}\n"
                         f"X-Ops-Server-API-Version:{headers.get('X-Ops-Server-API-Version') or '0'}")
            try:
                public.verify(signature, canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return False
            return headers.get("X-Ops-Content-Hash") == content
        if version not in ("1.0", "1.1"):
            return False
        b64 = lambda data: base64.b64encode(hashlib.sha1(data).digest()).decode()  # noqa: E731
        content = b64(body)
        user_id = b64(user.encode()) if version == "1.1" else user
        canonical = (f"Method:{method}\nHashed Path:{b64(path.encode())}\nX-Ops-Content-Hash:{content}\n"
                     f"X-Ops-Timestamp:{timestamp}\nX-Ops-UserId:{user_id}")
        numbers = public.public_numbers()
        size = (public.key_size + 7) // 8
        clear = pow(int.from_bytes(signature, "big"), numbers.e, numbers.n).to_bytes(size, "big")
        if not clear.startswith(b"\x00\x01") or b"\x00" not in clear[2:]:
            return False
        return clear[clear.index(b"\x00", 2) + 1:] == canonical.encode() and \
            headers.get("X-Ops-Content-Hash") == content

    # -- search lag --------------------------------------------------------------

    @staticmethod
    def _parse_search(method: str, inner: str, query: str, body: bytes) -> _Search | None:
        parts = inner.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "search" or method not in ("GET", "POST"):
            return None
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        keys = None
        if method == "POST":
            try:
                keys = json.loads(body or b"{}")
            except ValueError:
                keys = {}
        try:
            start, rows = int(params.get("start") or 0), int(params.get("rows") or 1000)
        except ValueError:
            start, rows = 0, 1000
        return _Search(unquote(parts[1]), params.get("q") or "*:*", start, rows, keys)

    @staticmethod
    def _write_of(method: str, inner: str, body: bytes) -> tuple[str, str, Any] | None:
        if method not in ("PUT", "POST", "DELETE"):
            return None
        parts = [unquote(p) for p in inner.strip("/").split("/")]
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            return None
        if parts[0] in _COLLECTIONS:
            index = _COLLECTIONS[parts[0]]
            if len(parts) == 1 and method == "POST" and isinstance(doc, dict) and "name" in doc:
                return index, str(doc["name"]), doc
            if len(parts) == 2 and method != "POST":
                return index, parts[1], None if method == "DELETE" else doc
        elif parts[0] == "data" and len(parts) >= 2:
            if len(parts) == 2 and method == "POST" and isinstance(doc, dict) and "id" in doc:
                return parts[1], str(doc["id"]), doc
            if len(parts) == 3 and method != "POST":
                return parts[1], parts[2], None if method == "DELETE" else doc
        return None

    def needs_previous(self, write: tuple[str, str, Any] | None, method: str) -> bool:
        """Whether the proxy must read the object before a write (its search version)."""
        if write is None or self.lag <= 0:
            return False
        with self._lock:
            return (write[0], write[1]) not in self._pending and method == "PUT"

    def record_write(self, write: tuple[str, str, Any], method: str, status: int,
                     previous: Any, answer: bytes) -> None:
        """Remember a successful write; search sees it ``lag`` seconds later."""
        if status >= 300 or self.lag <= 0:
            return
        index, key, doc = write
        if method == "DELETE" and previous is None:
            try:
                previous = json.loads(answer)
            except ValueError:
                previous = None
        now = time.monotonic()
        with self._lock:
            entry = self._pending.setdefault((index, key), [previous if method != "POST" else None, []])
            entry[1].append((now, doc))

    def _visible(self, now: float) -> dict[str, dict[str, tuple[Any, Any]]]:
        """index -> key -> (version search shows, current version) for lagging objects."""
        out: dict[str, dict[str, tuple[Any, Any]]] = {}
        with self._lock:
            for (index, key), (base, writes) in list(self._pending.items()):
                if writes[-1][0] + self.lag <= now:
                    del self._pending[(index, key)]
                    continue
                shown = base
                for when, doc in writes:
                    if when + self.lag <= now:
                        shown = doc
                out.setdefault(index, {})[key] = (shown, writes[-1][1])
        return out

    def search_answer(self, search: _Search, status: int, payload: bytes, upstream: str) -> tuple[int, bytes]:
        """The page erchef would give, from goiardi's complete, current answer."""
        if status != 200:
            return status, payload
        try:
            answer = json.loads(payload)
        except ValueError:
            return status, payload
        rows = answer.get("rows") if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            return status, payload
        lagging = self._visible(time.monotonic()).get(search.index, {})
        by_key: dict[str, Any] = {}
        for row in rows:
            key = _row_key(row, search.index)
            if key in lagging:
                shown = lagging[key][0]
                if shown is None:
                    continue
                row = self._render(search, key, shown, upstream)
            by_key[key] = row
        for key, (shown, _current) in lagging.items():
            if key not in by_key and shown is not None and matches(search.query, _fields(shown, search.index)):
                by_key[key] = self._render(search, key, shown, upstream)
        ordered = sorted(by_key.items(),
                         key=lambda kv: hashlib.sha1(f"{self.seed}/{kv[0]}".encode()).hexdigest())
        page = [row for _, row in ordered[search.start:search.start + search.rows]]
        total = min(len(ordered), self.window)
        return 200, json.dumps({"total": total, "start": search.start, "rows": page}).encode()

    @staticmethod
    def _render(search: _Search, key: str, doc: Any, upstream: str) -> Any:
        bag = search.index not in NAMED_INDEXES
        if search.keys is not None:
            where = f"/data/{quote(search.index, safe='')}/{quote(key, safe='')}" if bag else \
                f"/{NAMED_INDEXES[search.index]}/{quote(key, safe='')}"
            view = _node_view(doc) if search.index == "node" else doc
            data = {alias: _dig(view, path) for alias, path in search.keys.items()}
            return {"url": upstream + where, "data": data}
        if bag:
            return {"name": f"data_bag_item_{search.index}_{key}", "json_class": "Chef::DataBagItem",
                    "chef_type": "data_bag_item", "data_bag": search.index, "raw_data": doc}
        return doc


def _merge(low: Any, high: Any) -> Any:
    if isinstance(low, dict) and isinstance(high, dict):
        out = dict(low)
        for key, value in high.items():
            out[key] = _merge(low.get(key), value)
        return out
    return low if high is None else high


def _node_view(doc: Any) -> Any:
    """A node as partial search sees it: its attributes merged, plus its own fields."""
    if not isinstance(doc, dict):
        return doc
    merged: Any = {}
    for level in ("default", "normal", "override", "automatic"):
        merged = _merge(merged, doc.get(level) or {})
    return {**merged, **{k: v for k, v in doc.items()
                         if k not in ("default", "normal", "override", "automatic")}}


_RANGE_CLAUSE = re.compile(r"\s+AND\s+[\w.]+:[\[{][^\]}]*[\]}]")


def _dig(doc: Any, path: Any) -> Any:
    for step in path if isinstance(path, list) else [path]:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(step)
        if doc is None:
            return None
    return doc


def _row_key(row: Any, index: str) -> str:
    if isinstance(row, dict):
        if "url" in row:
            return unquote(str(row["url"]).rstrip("/").rsplit("/", 1)[-1])
        if index not in NAMED_INDEXES:
            raw = row.get("raw_data", row)
            if isinstance(raw, dict) and "id" in raw:
                return str(raw["id"])
        return str(row.get("name", ""))
    return ""


def _fields(doc: Any, index: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        return {}
    return dict(doc.get("raw_data", doc)) if index not in NAMED_INDEXES else dict(doc)


# -- a small Lucene subset, to tell whether a deleted object still matches -------

_TOKEN = re.compile(r"\s*(\(|\)|\bAND\b|\bOR\b|\bNOT\b|[^\s():\[]+(?:\\.[^\s():\[]*)*:"
                    r"(?:\[[^\]]*\]|\{[^}]*\}|(?:\\.|[^\s()\\])+)|\*:\*)")


def matches(query: str, fields: Mapping[str, Any]) -> bool:
    """Whether ``fields`` matches ``query``; False for what this subset cannot read."""
    tokens = []
    pos = 0
    query = query.strip()
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if not match or match.end() == pos:
            return False
        tokens.append(match.group(1))
        pos = match.end()
        while pos < len(query) and query[pos].isspace():
            pos += 1
    try:
        result, rest = _or(tokens, fields)
    except (IndexError, ValueError):
        return False
    return result and not rest


def _or(tokens: list[str], fields: Mapping[str, Any]) -> tuple[bool, list[str]]:
    value, tokens = _and(tokens, fields)
    while tokens and tokens[0] == "OR":
        other, tokens = _and(tokens[1:], fields)
        value = value or other
    return value, tokens


def _and(tokens: list[str], fields: Mapping[str, Any]) -> tuple[bool, list[str]]:
    value, tokens = _unary(tokens, fields)
    while tokens and tokens[0] == "AND":
        other, tokens = _unary(tokens[1:], fields)
        value = value and other
    return value, tokens


def _unary(tokens: list[str], fields: Mapping[str, Any]) -> tuple[bool, list[str]]:
    head = tokens[0]
    if head == "NOT":
        value, rest = _unary(tokens[1:], fields)
        return not value, rest
    if head == "(":
        value, rest = _or(tokens[1:], fields)
        if not rest or rest[0] != ")":
            raise ValueError("unbalanced")
        return value, rest[1:]
    if head in (")", "AND", "OR"):
        raise ValueError(head)
    return _term(head, fields), tokens[1:]


def _term(term: str, fields: Mapping[str, Any]) -> bool:
    if term == "*:*":
        return True
    name, _, pattern = term.partition(":")
    name = name.replace("\\", "")
    value = fields.get(name)
    if value is None:
        return False
    text = str(value)
    if pattern[:1] in "[{":
        low, _, high = pattern[1:-1].partition(" TO ")
        low, high = low.strip().replace("\\", ""), high.strip().replace("\\", "")
        return (low == "*" or text >= low) and (high == "*" or text <= high)
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                    for c in re.sub(r"\\(.)", r"\1", pattern))
    return re.fullmatch(regex, text) is not None
