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
  error for a page size that worked, shows it) or too few names came back to
  halve. A prefix ``P`` minus longer prefixes ``E`` that fills the window
  becomes the longest prefix ``L`` its rows share and ``P`` minus ``E`` and
  ``L``; or ``P`` + each next character seen and ``P`` minus those; or (past
  :data:`MAX_EXCLUDED` clauses, or when the rows tell nothing new) the name
  ``P`` itself and ``P`` + every character Chef allows in a name. Each part
  is smaller (a longer prefix, or fewer of the names seen), and together
  they hold exactly the names of ``P``, whatever the rows were;
* never sends ``(*:*) AND ...`` (goiardi's PostgreSQL search joins every
  indexed attribute for it: seconds per query) and never excludes a prefix
  without a letter or digit (``NOT name:_*`` matches nothing there, and
  ``name:_*`` everything: such an answer is taken as the superset it is);
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
        if bucket.depth > MAX_DEPTH if bucket.kind == "range" else len(bucket.low or "") > MAX_PREFIX:
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
                if bucket.kind == "exact" and not _alphanumeric(bucket.low) and not _maybe_window(exc):
                    # goiardi --pg-search cannot parse name:"-" (nor search it otherwise).
                    log.info("search %s: the server cannot search the %s %r exactly", index, field, bucket.low)
                    complete = True
                    break
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
            if bucket.kind in ("prefix", "exact") and any(not bucket.holds(v) for v in values[-len(found):]):
                if not _alphanumeric(bucket.low):
                    # goiardi --pg-search answers everything for "name:_*", "name:-*", "name:.*":
                    # a superset, split further by next character like any full bucket.
                    bucket.superset = True
                    start += len(found)
                    if len(found) < rows:
                        complete = True
                        break
                    continue
                raise InvalidResponse(
                    f"search {index} {query!r}: the server answered {bounded!r} with a {field} outside it, "
                    f"so results past its search window ({window.limit}) cannot be partitioned; "
                    "raise the server's max_result_window")
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
            if children is None and bucket.kind in ("all", "range"):
                # Too few names to halve (a tiny window): prefixes need none.
                log.info("search %s: too few %ss in a window of %d to split a range; partitioning by prefix",
                         index, field, window.limit)
                window.ranges = False
                todo = [_Bucket("all")]
                continue
            if children is None:
                raise InvalidResponse(
                    f"search {index} {query!r}: more results than the server's search window "
                    f"({window.limit}) and no {field} to split them by; raise the server's "
                    "max_result_window")
            todo.extend(children)


#: Characters of Chef object names: nodes, roles, clients and data bag items
#: (goiardi's and erchef's name checks), so a prefix ``P`` is covered exactly by
#: the name ``P`` itself and the prefixes ``P`` + each of these.
NAME_CHARACTERS = string.ascii_letters + string.digits + "_.:-"
#: At most this many "AND NOT" clauses in one query; past it a prefix is split
#: over every next character instead.
MAX_EXCLUDED = 8
#: A prefix longer than this means the server does not narrow by prefix.
MAX_PREFIX = 1024
#: The query that matches everything: left out of partition queries, because
#: goiardi's PostgreSQL search joins every indexed attribute of every object
#: for ``(*:*) AND name:P*`` (6 s for 50 nodes) but reads only names for ``name:P*``.
MATCH_ALL = "*:*"


class _Bucket:
    """A part of a search's results: all of it, a name range, a name prefix
    minus some longer prefixes (``name:P* AND NOT name:E1* ...``), or one name."""

    def __init__(self, kind: str, low: str | None = None, high: str | None = None,
                 depth: int = 0, minus: tuple[str, ...] = ()) -> None:
        self.kind = kind  # all | range (low..high) | prefix (low, minus) | exact (low)
        self.low = low
        self.high = high
        self.depth = depth
        self.minus = minus
        #: The server answered more than the bucket (see search_all).
        self.superset = False

    def query(self, query: str, field: str) -> str:
        if self.kind == "all":
            return query
        if self.kind == "range":
            clauses = [f"{field}:[{self.low or '*'} TO {self.high or '*'}]"]
        elif self.kind == "exact":
            clauses = [f"{field}:{solr_escape(self.low or '')}"]
        else:
            clauses = [f"{field}:{_term(self.low)}*" if self.low else f"{field}:*"]
            # Parenthesised: goiardi cannot parse "A AND NOT b AND NOT c".
            clauses += [f"(NOT {field}:{_term(e)}*)" for e in self.minus]
        base = [] if query.strip() == MATCH_ALL else [f"({query})"]
        return " AND ".join([*base, *clauses])

    def holds(self, value: str) -> bool:
        """Whether ``value`` may belong here (a server may fold the case of a prefix)."""
        if self.kind in ("all", "range"):
            return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)
        prefix = (self.low or "").lower()
        if self.kind == "exact":
            return value.lower() == prefix
        return value.lower().startswith(prefix) and not any(value.startswith(e) for e in self.minus)

    def split(self, values: list[str], ranges: bool) -> list[_Bucket] | None:
        """Buckets that together hold exactly what this one holds, each smaller.

        Name ranges split at the median of ``values``; prefixes never depend on
        ``values`` for completeness (only for how to split well): a prefix ``P``
        minus ``E`` is the longest prefix ``L`` the names seen share and ``P``
        minus ``E`` and ``L``; or ``P`` + each next character seen and ``P``
        minus ``E`` and those; or, past :data:`MAX_EXCLUDED` clauses or when the
        names seen tell nothing new, the name ``P`` and ``P`` + every character
        of :data:`NAME_CHARACTERS` (what ``E`` does not cover)."""
        depth = self.depth + 1
        if self.kind in ("all", "range") and ranges:
            middle = _split_point(values)
            if middle is None:
                return None
            return [_Bucket("range", middle, self.high, depth), _Bucket("range", self.low, middle, depth)]
        if self.kind == "exact":
            # Names are unique: one row is all of it, and a window of one cannot tell.
            # Several (a server folding case) cannot be narrowed.
            return [] if len(set(values)) <= 1 or self.superset else None
        prefix = "" if self.kind != "prefix" else (self.low or "")
        minus = self.minus if self.kind == "prefix" else ()
        mine = sorted({v for v in values if v.startswith(prefix) and not any(v.startswith(e) for e in minus)})
        common = _common_prefix(mine) if mine else prefix
        if len(common) > len(prefix):
            chosen = [common]
        else:
            chosen = sorted({prefix + v[len(prefix)] for v in mine if len(v) > len(prefix)})
        rest = tuple(e for e in minus if not any(e.startswith(c) for c in chosen)) + tuple(chosen)
        # "NOT name:_*" excludes everything on goiardi --pg-search: only prefixes with a
        # letter or digit are excluded.
        if chosen and not self.superset and len(rest) <= MAX_EXCLUDED and all(_alphanumeric(c) for c in chosen):
            return [*(self._child(c, depth) for c in chosen), _Bucket("prefix", prefix, depth=depth, minus=rest)]
        following = NAME_CHARACTERS
        if self.superset:
            # More prefixes without a letter or digit would be answered with everything again.
            following = [c for c in NAME_CHARACTERS if c.isalnum()]
            log.info("search: this server cannot narrow names starting with %r followed by one of "
                        "'_.:-' past its search window; they are listed only if the window shows them",
                        prefix)
        children = [self._child(prefix + c, depth) for c in following
                    if not any((prefix + c).startswith(e) for e in minus)]
        if prefix and not self.superset:
            children.append(_Bucket("exact", prefix, depth=depth))
        return children

    def _child(self, prefix: str, depth: int) -> _Bucket:
        """The prefix ``prefix`` (longer than this bucket's), minus what this one excludes inside it."""
        return _Bucket("prefix", prefix, depth=depth, minus=tuple(e for e in self.minus if e.startswith(prefix)))


_SOLR_SPECIAL = set('+-&|!(){}[]^"~*?:\\/ ')


def solr_escape(value: str) -> str:
    """An exact term for a Chef (Solr/Lucene) search query: ``value`` quoted as a phrase.

    A quoted phrase matches on every server; goiardi's PostgreSQL search
    (``--pg-search``) keeps backslashes in a term, so ``crowbar\\-web`` would
    match nothing there. goiardi cannot parse a colon inside quotes in either
    mode: such values are backslash-escaped instead (matched by its in-memory
    search and by Chef Infra Server).
    """
    if ":" in value:
        return "".join("\\" + c if c in _SOLR_SPECIAL else c for c in value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alphanumeric(prefix: str | None) -> bool:
    """Whether a prefix has a letter or digit (goiardi --pg-search ignores one without)."""
    return any(c.isalnum() for c in prefix or "")


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
