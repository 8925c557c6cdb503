"""A thin Chef server API client on ``requests`` and ``cryptography``.

Knows HTTP, signing, retries and the shapes of Chef objects; knows nothing
about Crowbar.

>>> chef = ChefClient(ChefConfig.load())
>>> chef.roles.get("web")
>>> for row in chef.partial_search("node", "*:*", {"name": ["name"], "ip": ["ipaddress"]}):
...     print(row["name"], row["ip"])
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import tenacity
import urllib3
from requests.adapters import HTTPAdapter

from barclamp_sdk.chef.auth import ChefSigner, load_private_key
from barclamp_sdk.chef.config import ChefConfig
from barclamp_sdk.chef.paging import SearchWindow, search_all
from barclamp_sdk.chef.pgquirks import check_storable, race_as_client_error
from barclamp_sdk.errors import (
    ConnectionFailed,
    HTTPError,
    InvalidResponse,
    NotFound,
    RequestTooLarge,
    ServerError,
    ValidationError,
    raise_for_response,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})
CHEF_VERSION = "12.22.5"


class _RetryableStatus(Exception):
    """An answer worth retrying (429/502/503/504); carries Retry-After."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = _parse_retry_after(response.headers.get("Retry-After"))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Wait(tenacity.wait.wait_base):
    """Exponential backoff with full jitter, raised to any Retry-After."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** (retry_state.attempt_number - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, _RetryableStatus) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


class RequestStats:
    """Counts of requests sent, by method; thread-safe.

    ``reads`` counts GETs and searches, ``writes`` counts PUT, POST (other
    than search) and DELETE; ``attempts`` includes retries; ``by_endpoint``
    counts by method and path shape (``GET /nodes/*`` reads one node);
    ``largest_body`` is the longest request body sent, in bytes, and
    ``largest_request`` its method and path.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_method: Counter[str] = Counter()
        self.by_endpoint: Counter[str] = Counter()
        self.reads = 0
        self.writes = 0
        self.attempts = 0
        self.largest_body = 0
        self.largest_request = ""

    def record(self, method: str, path: str, size: int = 0) -> None:
        parts = path.strip("/").split("/")
        shape = f"{method} /{parts[0]}" + ("/*" if len(parts) > 1 else "")
        with self._lock:
            if size > self.largest_body:
                self.largest_body, self.largest_request = size, f"{method} {path}"
            self.by_method[method] += 1
            self.by_endpoint[shape] += 1
            if method in WRITE_METHODS and not path.startswith("/search"):
                self.writes += 1
            else:
                self.reads += 1

    def record_attempt(self) -> None:
        with self._lock:
            self.attempts += 1

    def snapshot(self) -> dict[str, Any]:
        """Current counts as a plain dict."""
        with self._lock:
            return {"reads": self.reads, "writes": self.writes, "attempts": self.attempts,
                    "largest_body": self.largest_body, "largest_request": self.largest_request,
                    **{m.lower(): n for m, n in self.by_method.items()},
                    "by_endpoint": dict(self.by_endpoint)}


class ChefClient:
    """Signed, pooled, retrying access to one Chef server.

    Thread-safe: one client can serve many worker threads (the connection
    pool holds ``config.max_connections`` connections).
    """

    def __init__(self, config: ChefConfig) -> None:
        self.config = config
        key = load_private_key(config.read_client_key(), source=f"client key ({config.source_of('client_key')})")
        self.signer = ChefSigner(
            config.client_name,
            key,
            version=config.sign_version,
            server_api_version=config.server_api_version,
        )
        self.base_url = config.server_url.rstrip("/")
        self._base_path = urlsplit(self.base_url).path
        self.session = requests.Session()
        adapter = HTTPAdapter(
            pool_connections=2, pool_maxsize=config.max_connections, max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Proxies from the environment are resolved once: requests would
        # re-read the whole environment on every request (about half a
        # millisecond each), and the CA bundle and auth are explicit anyway.
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self.session.auth = self.signer
        self.session.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-Chef-Version": CHEF_VERSION,
                "User-Agent": "barclamp-sdk",
            }
        )
        if config.verify is False and self.base_url.startswith("https"):
            log.warning(
                "TLS verification is OFF for %s: anyone on the network path can "
                "impersonate the Chef server", self.base_url,
            )
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.timeout = (config.connect_timeout, config.read_timeout)
        self.stats = RequestStats()
        #: The server's search window, as configured and as learned from refusals.
        self.search_window = SearchWindow(config.search_window)
        self.flavor: str | None = None
        policy = config.retry
        self._retry_kwargs: dict[str, Any] = dict(
            retry=tenacity.retry_if_exception_type(
                (_RetryableStatus, requests.ConnectionError, requests.Timeout,
                 requests.exceptions.ChunkedEncodingError)
            ) & tenacity.retry_if_not_exception_type(requests.exceptions.SSLError),
            stop=tenacity.stop_after_attempt(policy.attempts)
            | tenacity.stop_before_delay(policy.total_timeout),
            wait=_Wait(policy.backoff_initial, policy.backoff_max),
            reraise=True,
        )
        # After a request gave up on an unreachable server, the next ones try
        # once until one succeeds or the retry cap has passed again: cleanup
        # after an outage (status, locks) fails fast instead of waiting the
        # full cap per request.
        self._single_try = dict(self._retry_kwargs, stop=tenacity.stop_after_attempt(1))
        self._outage_until = 0.0
        self.nodes = Collection(self, "nodes")
        self.roles = Collection(self, "roles")
        self.environments = Collection(self, "environments")
        self.clients = Collection(self, "clients")
        self.data_bags = DataBags(self)

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def __enter__(self) -> ChefClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ChefClient({self.base_url!r}, client={self.config.client_name!r})"

    # -- requests -----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one signed request and return the decoded JSON answer.

        ``path`` is relative to the server URL (``/roles/web``). Raises a
        subclass of :class:`~barclamp_sdk.errors.ChefError`.
        """
        method = method.upper()
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        if data is not None and method in ("PUT", "POST") and len(data) > self.config.max_request_size:
            raise RequestTooLarge.before_sending(method, path, _subject(path, body), len(data),
                                                 self.config.max_request_size)
        if data is not None:
            check_storable(method, path, body, data)
        url = self.base_url + path
        attempts = 0
        started = time.monotonic()
        self.stats.record(method, path, len(data) if data is not None else 0)

        def attempt() -> requests.Response:
            nonlocal attempts
            attempts += 1
            self.stats.record_attempt()
            # verify is passed per request: requests lets REQUESTS_CA_BUNDLE /
            # CURL_CA_BUNDLE override Session.verify otherwise.
            response = self.session.request(
                method, url, data=data, params=params, timeout=self.timeout,
                verify=self.config.verify,
            )
            if response.status_code in RETRY_STATUSES:
                log.debug("%s %s -> %s, will retry", method, path, response.status_code)
                raise _RetryableStatus(response)
            return response

        in_outage = started < self._outage_until
        try:
            response = tenacity.Retrying(**(self._single_try if in_outage else self._retry_kwargs))(attempt)
        except _RetryableStatus as exc:
            self._outage_until = time.monotonic() + self.config.retry.total_timeout
            raise_for_response(method, path, exc.response, retried=attempts > 1)
            raise  # pragma: no cover - raise_for_response always raises here
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            elapsed = time.monotonic() - started
            self._outage_until = time.monotonic() + self.config.retry.total_timeout
            if in_outage:
                raise ConnectionFailed(
                    f"{method} {path}: cannot reach the Chef server at {self.base_url} "
                    f"({_short_reason(exc)}; still unreachable after the previous request gave up)"
                ) from None
            raise ConnectionFailed(
                f"{method} {path}: cannot reach the Chef server at {self.base_url} "
                f"({_short_reason(exc)}; gave up after {attempts} attempt{'s' if attempts != 1 else ''} "
                f"in {elapsed:.1f}s)"
            ) from None
        except requests.RequestException as exc:
            raise ConnectionFailed(f"{method} {path}: {_short_reason(exc)}") from None
        self._outage_until = 0.0
        if self.flavor is None:
            self.flavor = "goiardi" if response.headers.get("X-Goiardi") else "chef-server"
        log.debug("%s %s -> %s (%d attempt(s), %.1f ms)", method, path,
                  response.status_code, attempts, (time.monotonic() - started) * 1000)
        if response.status_code >= 400:
            try:
                raise_for_response(method, path, response, retried=attempts > 1)
            except ServerError as exc:  # goiardi on PostgreSQL answers some races with 500
                raise (race_as_client_error(exc) or exc) from None
        if not response.content:
            if method == "GET":
                raise InvalidResponse(
                    f"GET {path}: the server answered {response.status_code} with an empty "
                    f"body; is {self.base_url} the right URL? (goiardi has no organizations)"
                )
            return None
        try:
            return response.json()
        except ValueError:
            raise InvalidResponse(
                f"{method} {path}: the server's answer is not JSON "
                f"(starts with {response.text[:60]!r})"
            ) from None

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET ``path``."""
        return self.request("GET", path, params=params)

    def put(self, path: str, body: Any) -> Any:
        """PUT ``body`` to ``path``."""
        return self.request("PUT", path, body)

    def post(self, path: str, body: Any, *, params: Mapping[str, Any] | None = None) -> Any:
        """POST ``body`` to ``path`` (use :meth:`create` for creates)."""
        return self.request("POST", path, body, params=params)

    def delete(self, path: str) -> Any:
        """DELETE ``path``; a retried delete that finds nothing succeeds."""
        try:
            return self.request("DELETE", path)
        except NotFound as exc:
            if exc.retried:
                return None
            raise

    def create(self, collection_path: str, body: Mapping[str, Any], object_path: str) -> Any:
        """POST a new object, staying correct when the POST is retried.

        If a retried POST answers 409, an earlier attempt may have created the
        object: it counts as ours only if the stored object matches ``body``;
        otherwise the :class:`~barclamp_sdk.errors.Conflict` is raised.
        """
        try:
            return self.request("POST", collection_path, body)
        except HTTPError as exc:
            if exc.status != 409 or not exc.retried:
                raise
            stored = self.get(object_path)
            if isinstance(stored, dict) and _same_content(body, stored):
                log.info("retried create of %s found our own object; continuing", object_path)
                return stored
            raise

    # -- search -------------------------------------------------------------

    def _sort_order(self, partial: bool) -> str | None:
        if self.flavor is None:
            self.get("/environments/_default")
        if self.flavor == "goiardi":
            # goiardi sorts partial results after wrapping them as {url, data},
            # so only "url" gives a stable order across pages.
            return "url asc" if partial else None
        return "X_CHEF_id_CHEF_X asc"

    def page_size(self) -> int:
        """Rows per search page: goiardi evaluates every match for each page,
        so few large pages are much cheaper there; Chef Server pages cheaply."""
        if self.config.search_rows:
            return self.config.search_rows
        if self.flavor is None:
            self.get("/environments/_default")
        return 10000 if self.flavor == "goiardi" else 1000

    def search(self, index: str, query: str = "*:*", *, rows: int | None = None) -> Iterator[dict[str, Any]]:
        """Yield every object matching ``query`` in ``index``, page by page."""
        yield from self._paged(index, query, rows or self.page_size(), None)

    def partial_search(
        self,
        index: str,
        query: str,
        keys: Mapping[str, Sequence[str]],
        *,
        rows: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield only the attributes named in ``keys`` for each match.

        ``keys`` maps a result name to an attribute path, e.g.
        ``{"name": ["name"], "mem": ["memory", "total"]}``.
        """
        # Neutral aliases: goiardi validates result names that match object
        # fields ("run_list", "env_run_lists" ...) as if they were those fields.
        names = list(keys)
        body = {f"k{i}": list(keys[name]) for i, name in enumerate(names)}
        for row in self._paged(index, query, rows or self.page_size(), body):
            data = row.get("data") or {}
            yield {name: data.get(f"k{i}") for i, name in enumerate(names)}

    def _paged(
        self, index: str, query: str, rows: int, body: dict[str, list[str]] | None
    ) -> Iterator[dict[str, Any]]:
        """Every match once: paged inside the window, partitioned past it (see paging)."""
        path = f"/search/{path_segment(index)}"
        sort = self._sort_order(body is not None)

        def fetch(q: str, start: int, count: int) -> list[Any]:
            params: dict[str, Any] = {"q": q, "start": start, "rows": count}
            if sort:
                params["sort"] = sort
            if body is None:
                page = self.request("GET", path, params=params)
            else:
                page = self.request("POST", path, body, params=params)
            found = page.get("rows") if isinstance(page, dict) else None
            if not isinstance(found, list):
                raise InvalidResponse(f"search {index}: answer has no rows")
            return found

        yield from search_all(fetch, index, query, rows, self.search_window)




def path_segment(value: str) -> str:
    """``value`` quoted as one URL path segment; refuses what no URL can address.

    HTTP clients and servers resolve ``.`` and ``..`` segments away, so an
    object with such a name (or none) could be created but never read back.
    """
    if value in ("", ".", ".."):
        raise ValidationError(f"the name {value!r} cannot be used: the Chef API cannot address an "
                              "object named '', '.' or '..'")
    # ":" and "@" are legal in a path segment (RFC 3986 pchar) and in Chef names: left as they
    # are, since Chef servers check the signature against the decoded path.
    return quote(value, safe=":@")


def _subject(path: str, body: Any) -> str:
    """What a request body is, for messages: "role web", "data bag item crowbar/x"."""
    parts = [p for p in path.split("/") if p]
    kinds = {"nodes": "node", "roles": "role", "clients": "client", "environments": "environment"}
    name = body.get("name", body.get("id")) if isinstance(body, Mapping) else None
    if parts and parts[0] in kinds:
        return f"{kinds[parts[0]]} {parts[1] if len(parts) > 1 else name}"
    if parts and parts[0] == "data" and len(parts) > 1:
        item = parts[2] if len(parts) > 2 else name
        return f"data bag item {parts[1]}/{item}" if item is not None else f"data bag {parts[1]}"
    return "the request body"


def _same_content(sent: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    return all(stored.get(key) == value for key, value in sent.items()
               if key not in ("json_class", "chef_type"))


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Read timed out",
                   "RemoteDisconnected", "Remote end closed", "timed out",
                   "Name or service not known", "CERTIFICATE_VERIFY_FAILED"):
        if marker in text:
            if marker == "CERTIFICATE_VERIFY_FAILED":
                return "TLS certificate verification failed; pass the server's CA with CHEF_SSL_CA_FILE"
            return marker.lower()
    return type(exc).__name__ + (": " + text[:120] if text else "")


class Collection:
    """A top-level collection of named Chef objects (nodes, roles, ...)."""

    def __init__(self, client: ChefClient, name: str) -> None:
        self.client = client
        self.name = name

    def _path(self, name: str) -> str:
        return f"/{self.name}/{path_segment(name)}"

    def list(self) -> list[str]:
        """Names of all objects in the collection."""
        return sorted(self.client.get(f"/{self.name}") or {})

    def get(self, name: str) -> dict[str, Any]:
        """One object; raises NotFound."""
        return self.client.get(self._path(name))

    def find(self, name: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            return self.get(name)
        except NotFound:
            return None

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an object (``body["name"]`` names it); Conflict if it exists."""
        return self.client.create(f"/{self.name}", body, self._path(str(body["name"])))

    def update(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an object with ``body`` (Chef PUT is a full overwrite)."""
        return self.client.put(self._path(name), body)

    def delete(self, name: str) -> None:
        """Delete an object."""
        self.client.delete(self._path(name))


class DataBags:
    """Data bags and their items."""

    def __init__(self, client: ChefClient) -> None:
        self.client = client

    @staticmethod
    def _bag(bag: str) -> str:
        return f"/data/{path_segment(bag)}"

    def _item(self, bag: str, item_id: str) -> str:
        return f"{self._bag(bag)}/{path_segment(item_id)}"

    def list(self) -> list[str]:
        """Names of all data bags."""
        return sorted(self.client.get("/data") or {})

    def create(self, bag: str) -> None:
        """Create a data bag; Conflict if it exists."""
        self.client.create("/data", {"name": bag}, self._bag(bag))

    def ensure(self, bag: str) -> None:
        """Create a data bag unless it exists."""
        try:
            self.create(bag)
        except HTTPError as exc:
            if exc.status != 409:
                raise

    def delete(self, bag: str) -> None:
        """Delete a data bag and all its items."""
        self.client.delete(self._bag(bag))

    def items(self, bag: str) -> list[str]:
        """Ids of the items of a bag."""
        return sorted(self.client.get(self._bag(bag)) or {})

    def get_item(self, bag: str, item_id: str) -> dict[str, Any]:
        """One item; raises NotFound."""
        return self.client.get(self._item(bag, item_id))

    def find_item(self, bag: str, item_id: str) -> dict[str, Any] | None:
        """One item, or None."""
        try:
            return self.get_item(bag, item_id)
        except NotFound:
            return None

    def create_item(self, bag: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """Create an item (atomic: Conflict if the id exists)."""
        return self.client.create(self._bag(bag), item, self._item(bag, str(item["id"])))

    def update_item(self, bag: str, item: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an existing item; NotFound if it does not exist."""
        return self.client.put(self._item(bag, str(item["id"])), item)

    def delete_item(self, bag: str, item_id: str) -> None:
        """Delete an item."""
        self.client.delete(self._item(bag, item_id))
