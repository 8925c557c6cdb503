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
  bags; the range syntax both goiardi and erchef's Lucene grammar accept),
  and each half is searched again, recursively;
* learns a smaller window: a page the server refuses (400/500) is retried
  narrower, and the largest page that worked becomes the window.
"""

from __future__ import annotations

import logging
import re
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
    ranges: list[tuple[str | None, str | None, int]] = [(None, None, 0)]
    while ranges:
        low, high, depth = ranges.pop()
        bounded = query if low is None and high is None else \
            f"({query}) AND {field}:[{low or '*'} TO {high or '*'}]"
        start = 0
        values: list[str] = []
        complete = False
        while True:
            rows = min(page_size, window.limit - start)
            if rows <= 0:
                break
            try:
                found = fetch(bounded, start, rows)
            except HTTPError as exc:
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
            start += len(found)
            if len(found) < rows:
                complete = True
                break
        if not complete:
            middle = _split_point(values)
            if middle is None or depth >= MAX_DEPTH:
                raise InvalidResponse(
                    f"search {index} {query!r}: more results than the server's search window "
                    f"({window.limit}) and no {field} range to split them by"
                    + (" (the server orders names differently from byte order?)" if middle else "")
                    + "; raise the server's max_result_window")
            ranges.append((middle, high, depth + 1))
            ranges.append((low, middle, depth + 1))


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
