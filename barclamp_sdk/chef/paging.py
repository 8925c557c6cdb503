"""Complete search results on any Chef server, whatever its window and order.

Chef Infra Server answers a search in its internal order (``sort`` is
ignored), caps ``total`` at 10,000 and refuses ``start + rows`` past its
window (OpenSearch's ``max_result_window``, 10,000 by default); goiardi
reports the page size as ``total``. So :func:`search_all`:

* never reads ``total``: a range of results ends with a short page;
* never relies on order: rows are deduplicated by url (or name / id);
* never asks past the window: when a range fills the window it is split in
  two name ranges at the median of the names it returned
  (``(Q) AND name:[* TO m]`` and ``(Q) AND name:[m TO *]``, ``id`` for data
  bags; the range syntax goiardi in memory and erchef's Lucene grammar
  accept), and each half is searched again, recursively;
* falls back to name prefixes where ranges are not honoured (goiardi
  ``--pg-search`` ignores or refuses them: a row outside its range, or an
  error for a page size that worked, shows it): a full prefix ``P`` becomes
  the longest prefix ``L`` its rows share plus ``P* AND NOT L*``, or, when
  they share none, ``P`` plus each next character seen and ``P*`` without
  those;
* learns a smaller window: a page the server refuses (400/500) is retried
  narrower, and the largest page that worked becomes the window.
"""

from __future__ import annotations

import logging
import re
import string
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from barclamp_sdk.errors import HTTPError, InvalidResponse

log = logging.getLogger(__name__)

#: Indexes whose objects are named by ``name``; data bags use ``id``.
NAMED_INDEXES = frozenset({"node", "role", "client", "environment"})
# What a range bound may look like on goiardi and in erchef's Lucene grammar
# (start letter, then letters; ':' would need an escape goiardi does not read).
_RANGE_SAFE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*$")
# Answers that are about the query, not the window: not worth narrowing.
_QUERY_ERRORS = ("parse error", "invalid search query", "i don't know how to search")

#: Halvings of one search before giving up: 2**64 results is more than any server holds,
#: so hitting it means the ranges do not shrink (a server collation unlike byte order).
MAX_DEPTH = 64

Fetch = Callable[[str, int, int], list[Any]]


class SearchWindow:
    """The largest ``start + rows`` a server answers; shared by a client's searches."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self.limit = max(1, limit)
        self.good = 0
        self.learned = False
        #: Whether the server honours name ranges (goiardi --pg-search does not);
        #: None until a search needed a partition.
        self.ranges: bool | None = None

    def worked(self, end: int) -> None:
        with self._lock:
            self.good = max(self.good, end)

    def refused(self, end: int) -> bool:
        """A page ending at ``end`` was refused; False when nothing narrower is left."""
        with self._lock:
            if end <= 1:
                return False
            new = self.good if 0 < self.good < end else max(1, end // 2)
            self.limit = max(1, min(self.limit, new, end - 1))
            self.learned = True
            log.info("search window narrowed to %d (a page ending at %d was refused)", self.limit, end)
            return True


def search_all(fetch: Fetch, index: str, query: str, page_size: int,
               window: SearchWindow) -> Iterator[Any]:
    """Every row matching ``query`` exactly once; ``fetch(q, start, rows)`` gets one page."""
    field = "name" if index in NAMED_INDEXES else "id"
    seen: set[str] = set()
    todo: list[_Bucket] = [_Bucket("all")]
    while todo:
        bucket = todo.pop()
        if bucket.depth > MAX_DEPTH:
            raise InvalidResponse(
                f"search {index} {query!r}: more results than the server's search window "
                f"({window.limit}) and the {field} partitions stop shrinking; raise the server's "
                "max_result_window")
        bounded = bucket.query(query, field)
        start = 0
        values: list[str] = []
        complete = False
        restart = False
        while True:
            rows = min(page_size, window.limit - start)
            if rows <= 0:
                break
            try:
                found = fetch(bounded, start, rows)
            except HTTPError as exc:
                if bucket.kind == "range" and start + rows <= max(window.good, 1):
                    restart = True  # a page size that works, refused for a range: no ranges here
                    break
                if not _maybe_window(exc) or not window.refused(start + rows):
                    raise
                continue
            window.worked(start + rows)
            for row in found:
                ident, value = _identity(row, index)
                values.append(value)
                if ident not in seen:
                    seen.add(ident)
                    yield row
            if bucket.kind == "range" and any(not bucket.holds(v) for v in values[-len(found):]):
                restart = True  # the server ignored the range
                break
            start += len(found)
            if len(found) < rows:
                complete = True
                break
        if restart:
            log.info("search %s: the server does not honour %s ranges; partitioning by prefix", index, field)
            window.ranges = False
            todo = [_Bucket("all")]
            continue
        if not complete:
            children = bucket.split(values, window.ranges is not False)
            if children is None:
                raise InvalidResponse(
                    f"search {index} {query!r}: more results than the server's search window "
                    f"({window.limit}) and no {field} to split them by; raise the server's "
                    "max_result_window")
            todo.extend(children)


#: Characters of Chef object names (nodes, roles, data bag items).
NAME_CHARACTERS = string.ascii_letters + string.digits + "_.:-"
#: At most this many "AND NOT" clauses in one query (goiardi's PostgreSQL search stalls on them).
MAX_EXCLUDED = 1


class _Bucket:
    """A part of a search's results: all of it, a name range, or a name prefix
    minus some longer prefixes (``P* AND NOT e1* AND NOT e2* ...``)."""

    def __init__(self, kind: str, low: str | None = None, high: str | None = None,
                 depth: int = 0, minus: tuple[str, ...] = ()) -> None:
        self.kind = kind  # all | range (low..high) | prefix (low, minus) | exact (low)
        self.low = low
        self.high = high
        self.depth = depth
        self.minus = minus

    def query(self, query: str, field: str) -> str:
        if self.kind == "all":
            return query
        if self.kind == "range":
            return f"({query}) AND {field}:[{self.low or '*'} TO {self.high or '*'}]"
        if self.kind == "exact":
            return f"({query}) AND {field}:{_term(self.low)}"
        clauses = [f"{field}:{_term(self.low)}*"] if self.low else []
        # Parenthesised: goiardi cannot parse "A AND NOT b AND NOT c".
        clauses += [f"(NOT {field}:{_term(e)}*)" for e in self.minus]
        return " AND ".join([f"({query})", *clauses])

    def holds(self, value: str) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def split(self, values: list[str], ranges: bool) -> list[_Bucket] | None:
        depth = self.depth + 1
        if self.kind in ("all", "range") and ranges:
            middle = _split_point(values)
            if middle is None:
                return None
            return [_Bucket("range", middle, self.high, depth), _Bucket("range", self.low, middle, depth)]
        prefix = "" if self.kind == "all" else (self.low or "")
        mine = [v for v in values if v.startswith(prefix) and not any(v.startswith(e) for e in self.minus)]
        if not mine:
            return None
        common = _common_prefix(mine)
        if len(common) > len(prefix):
            # They share a longer prefix: that, and the rest without it.
            inner = tuple(e for e in self.minus if e.startswith(common))
            return [_Bucket("prefix", common, depth=depth, minus=inner),
                    _Bucket("prefix", prefix or None, depth=depth, minus=(*self.minus, common))]
        seen = sorted({v[len(prefix)] for v in mine if len(v) > len(prefix)})
        if not seen:
            return None
        children = [_Bucket("prefix", prefix + c, depth=depth,
                            minus=tuple(e for e in self.minus if e.startswith(prefix + c))) for c in seen]
        if len(self.minus) + len(seen) <= MAX_EXCLUDED:
            # What starts with characters not seen yet (and the name ``prefix`` itself).
            children.append(_Bucket("prefix", prefix or None, depth=depth,
                                    minus=(*self.minus, *(prefix + c for c in seen))))
            return children
        # A long "AND NOT ..." list stalls goiardi's PostgreSQL search (60 s and more
        # with 15 clauses): every other next character instead, each a plain prefix,
        # and the name ``prefix`` itself.
        children += [_Bucket("prefix", prefix + c, depth=depth,
                             minus=tuple(e for e in self.minus if e.startswith(prefix + c)))
                     for c in NAME_CHARACTERS if c not in seen and not any(
                         (prefix + c).startswith(e) for e in self.minus)]
        if prefix:
            children.append(_Bucket("exact", prefix, depth=depth))
        return children


def _term(value: str | None) -> str:
    """A name as a Lucene term: ':' escaped, and '-' where it would start one."""
    text = (value or "").replace("\\", "\\\\").replace(":", "\\:")
    return "\\" + text if text.startswith("-") else text


def _common_prefix(values: list[str]) -> str:
    low, high = min(values), max(values)
    size = 0
    while size < min(len(low), len(high)) and low[size] == high[size]:
        size += 1
    return low[:size]


def _maybe_window(exc: HTTPError) -> bool:
    if exc.status not in (400, 500):
        return False
    text = " ".join(exc.messages).lower()
    return not any(marker in text for marker in _QUERY_ERRORS)


def _identity(row: Any, index: str) -> tuple[str, str]:
    """(dedupe key, name or id) of one search row."""
    if not isinstance(row, dict):
        return repr(row), ""
    if "url" in row:
        url = str(row["url"])
        return url, unquote(url.rstrip("/").rsplit("/", 1)[-1])
    if index not in NAMED_INDEXES:
        raw = row.get("raw_data", row)
        if isinstance(raw, dict) and "id" in raw:
            return f"id:{raw['id']}", str(raw["id"])
    name = str(row.get("name", ""))
    return f"name:{name}", name


def _split_point(values: list[str]) -> str | None:
    """A range bound with some of ``values`` below it and some above."""
    distinct = sorted(set(values))
    if len(distinct) < 2:
        return None
    middle = len(distinct) // 2
    # Strictly inside, so each half loses a value (progress), nearest the median.
    inside = [i for i in range(1, len(distinct) - 1) if _RANGE_SAFE.match(distinct[i])]
    if not inside:
        return None
    return distinct[min(inside, key=lambda i: abs(i - middle))]
