"""Documents too large for one request, stored as parts (the split rule).

A Chef server refuses request bodies over 1,000,000 bytes. A proposal for
thousands of machines holds per-machine maps (swift's ``devices``, ceph's
``osd_devices``) and element lists far past that, so every document the
library stores whole (proposal items, history items, config roles) goes
through :func:`split` first, and comes back through :func:`join`.

The rule, applied bottom-up (innermost containers first):

* an object or array whose JSON (after its own large children were split)
  is longer than :data:`SPLIT_BYTES` is replaced by ``{"crowbar-parts":
  [id, ...]}``;
* its entries (an object's key/value pairs, an array's items, in order) are
  cut into consecutive parts: a part ends after an entry whose CRC-32 (of the
  key, or of the item's JSON) is divisible by a power of two chosen so parts
  average about :data:`TARGET_BYTES`, or before it would pass
  :data:`PART_BYTES`. The cut points depend on the entries, not on their
  positions, so adding, changing or removing one machine changes one part;
* each part is item ``<owner>-<hash>`` of data bag ``crowbar_parts``
  (``owner`` is the proposal's item id, ``hash`` 24 hex digits of the SHA-256
  of the part's entries), holding ``{"id", "owner", "kind": "object" |
  "array", "entries"}``. Parts are immutable (content-addressed): revisions,
  the current document and the config role share the parts they have in
  common, a part is written before any document naming it, and parts are
  deleted only with their proposal.

A Chef recipe reassembles a split value as the library does: for each id,
``data_bag_item('crowbar_parts', id)['entries']``, merged (objects) or
concatenated (arrays) in order.

A value that would read as a reference (an object whose one key is
``crowbar-parts``, say ceph's ``osd_devices`` of a single machine named so) or
as an escape is stored escaped, ``{"crowbar-parts-escaped": value}``, and
comes back as it was: no stored value is ever taken for a reference it is not.
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import Conflict, CrowbarError, NotFound
from barclamp_sdk.model.parallel import run_parallel

PARTS_BAG = "crowbar_parts"
#: The key of the reference that replaces a split container.
PARTS_KEY = "crowbar-parts"
#: The key that wraps a value shaped like a reference (or like an escape) so it stays a value.
ESCAPE_KEY = "crowbar-parts-escaped"
#: Containers whose JSON is longer than this are split.
SPLIT_BYTES = 100_000
#: What parts average, at most (large parts: a 20,000-machine proposal is about 100 of them).
TARGET_BYTES = 400_000
#: No part's entries are longer than this (unless one entry alone is): under half a 1,000,000-byte request.
PART_BYTES = 480_000
#: Parts a process keeps (their JSON, in characters): parts never change, so a read may come from here.
CACHE_BYTES = 48_000_000


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _pow2(value: float) -> int:
    power = 1
    while power * 2 <= value:
        power *= 2
    return power


def _hash(entries: Any) -> str:
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def is_reference(value: Any) -> bool:
    """Whether ``value`` is the reference a split container was replaced by."""
    return (isinstance(value, dict) and len(value) == 1 and isinstance(value.get(PARTS_KEY), list)
            and all(isinstance(i, str) for i in value[PARTS_KEY]))


def _is_escape(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(ESCAPE_KEY), dict)


def _ambiguous(value: dict[str, Any]) -> bool:
    """Whether an object of the document would read as a reference or an escape if stored as it is."""
    return len(value) == 1 and (PARTS_KEY in value or ESCAPE_KEY in value)


def _escaped(value: Any) -> Any:
    """``value`` with every ambiguous object wrapped (the same object if there is none)."""
    if isinstance(value, dict):
        out = {key: _escaped(child) for key, child in value.items()}
        if _ambiguous(value):
            return {ESCAPE_KEY: out}
        return out if any(out[k] is not value[k] for k in value) else value
    if isinstance(value, list):
        items = [_escaped(child) for child in value]
        return items if any(a is not b for a, b in zip(items, value)) else value
    return value


def split(document: Mapping[str, Any], owner: str, *, limit: int = SPLIT_BYTES) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``document`` with its large containers replaced by references, and the parts (id -> item).

    The top level itself is never replaced (its small keys stay in place).
    Pure: the same document gives the same parts.
    """
    parts: dict[str, dict[str, Any]] = {}
    head: dict[str, Any] = {}
    for key, value in document.items():
        head[key] = _shrink(value, owner, parts, limit)[0]
    return head, parts


def _shrink(value: Any, owner: str, parts: dict[str, dict[str, Any]], limit: int) -> tuple[Any, int]:
    size = _size(value)
    if size <= limit or not isinstance(value, (dict, list)):
        escaped = _escaped(value)  # small enough whole: nothing inside it is split either
        return escaped, size if escaped is value else _size(escaped)
    if isinstance(value, dict):
        entries: list[tuple[Any, Any, int]] = []
        total = 2
        for key, child in value.items():
            small, size = _shrink(child, owner, parts, limit)
            size += _size(key) + 1
            entries.append((key, small, size))
            total += size + 1
        if total - 1 <= limit:
            whole = {k: v for k, v, _ in entries}
            return ({ESCAPE_KEY: whole}, _size({ESCAPE_KEY: whole})) if _ambiguous(value) else (whole, total - 1)
        return _cut(entries, "object", owner, parts)  # a real reference: a part holds entries, whatever their keys
    if isinstance(value, list):
        items = [_shrink(child, owner, parts, limit) for child in value]
        total = 1 + sum(s + 1 for _, s in items)
        if total <= limit:
            return [v for v, _ in items], total
        return _cut([(None, v, s) for v, s in items], "array", owner, parts)
    return value, size  # pragma: no cover - containers are handled above


def _cut(entries: list[tuple[Any, Any, int]], kind: str, owner: str,
         parts: dict[str, dict[str, Any]]) -> tuple[Any, int]:
    average = max(1, sum(s for _, _, s in entries) // len(entries))
    modulus = _pow2(max(1, TARGET_BYTES // average))
    ids: list[str] = []
    current: list[tuple[Any, Any, int]] = []
    size = 0

    def close() -> None:
        body: Any = ({k: v for k, v, _ in current} if kind == "object" else [v for _, v, _ in current])
        part_id = f"{owner}-{_hash(body)}"
        parts[part_id] = {"id": part_id, "owner": owner, "kind": kind, "entries": body}
        ids.append(part_id)

    for key, value, entry_size in entries:
        if current and size + entry_size > PART_BYTES:
            close()
            current, size = [], 0
        current.append((key, value, entry_size))
        size += entry_size + 1
        mark = key if kind == "object" else value
        if zlib.crc32(json.dumps(mark, sort_keys=True, separators=(",", ":")).encode()) % modulus == 0:
            close()
            current, size = [], 0
    if current:
        close()
    reference = {PARTS_KEY: ids}
    return reference, _size(reference)


def references(document: Any) -> set[str]:
    """Every part id ``document`` names (its own references, not those inside parts)."""
    return _scan(document)[0]


def _scan(document: Any) -> tuple[set[str], bool]:
    """The part ids ``document`` names, and whether it holds an escaped value."""
    found: set[str] = set()
    escapes = False
    stack = [document]
    while stack:
        value = stack.pop()
        if is_reference(value):
            found.update(value[PARTS_KEY])
        elif _is_escape(value):
            escapes = True
            stack.extend(value[ESCAPE_KEY].values())  # the wrapped object itself is a value, whatever its shape
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return found, escapes


def join(document: Any, fetch: Callable[[list[str]], Mapping[str, dict[str, Any]]]) -> Any:
    """``document`` with every reference replaced by what its parts hold (recursively).

    ``fetch`` reads parts by id (all of one level at once). Raises
    :class:`CrowbarError` when a part is missing or is not a part.
    """
    refs, escapes = _scan(document)
    if not refs:
        return _replace(document, {}) if escapes else document
    wanted = sorted(refs)
    found = dict(fetch(wanted))
    missing = [i for i in wanted if i not in found]
    if missing:
        raise CrowbarError(f"{len(missing)} part(s) of a stored document are missing from data bag "
                           f"{PARTS_BAG} (first: {missing[0]}); restore them from a backup")
    for part_id, item in found.items():
        _check_part(part_id, item)
    found = {i: {**item, "entries": _join_entries(item["entries"], fetch)} for i, item in found.items()}
    return _replace(document, found)


def _join_entries(entries: dict[str, Any] | list[Any], fetch: Callable[[list[str]], Mapping[str, dict[str, Any]]]) -> Any:
    """A part's entries with what they refer to joined in (the entries themselves are no reference, whatever their keys)."""
    if isinstance(entries, list):
        return join(entries, fetch)
    return dict(zip(entries, join(list(entries.values()), fetch)))


def _check_part(part_id: str, item: Any) -> None:
    """Refuse an item of the parts bag that is not the part ``part_id`` (changed or replaced by hand)."""
    if not isinstance(item, dict) or item.get("id") != part_id:
        problem = "holds another id"
    elif item.get("kind") not in ("object", "array"):
        problem = f"has kind {item.get('kind')!r}, not object or array"
    elif not isinstance(item.get("entries"), dict if item["kind"] == "object" else list):
        problem = f"has entries that are not an {item['kind']}"
    else:
        return
    raise CrowbarError(f"item {part_id} of data bag {PARTS_BAG} is no part of a stored document "
                       f"(it {problem}); restore it from a backup")


def _replace(value: Any, found: Mapping[str, dict[str, Any]]) -> Any:
    if _is_escape(value):
        return {k: _replace(v, found) for k, v in value[ESCAPE_KEY].items()}
    if is_reference(value):
        items = [found[i] for i in value[PARTS_KEY]]
        if items and items[0].get("kind") == "array":
            return [entry for item in items for entry in item["entries"]]
        merged: dict[str, Any] = {}
        for item in items:
            merged.update(item["entries"])
        return merged
    if isinstance(value, dict):
        return {k: _replace(v, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, found) for v in value]
    return value


class PartStore:
    """Reads and writes parts in data bag ``crowbar_parts``.

    A part's id names its content, so the parts this process read or wrote
    last (up to :data:`CACHE_BYTES`) are not read again: rereading a large
    proposal (an edit reads it under its lock, a diff reads two revisions)
    costs only the parts it does not share with what was read before.
    """

    def __init__(self, chef: ChefClient, concurrency: int = 8) -> None:
        self.chef = chef
        self.concurrency = concurrency
        self._bag_ready = False
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def _keep(self, item: dict[str, Any]) -> None:
        text = json.dumps(item, separators=(",", ":"))
        with self._lock:
            previous = self._cache.pop(item["id"], None)
            self._cached += len(text) - len(previous or "")
            self._cache[item["id"]] = text
            while self._cached > CACHE_BYTES and self._cache:
                self._cached -= len(self._cache.popitem(last=False)[1])

    def _recall(self, part_id: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._cache.get(part_id)
            if text is not None:
                self._cache.move_to_end(part_id)
        return json.loads(text) if text is not None else None  # a new copy: callers may change it

    def _parallel(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return run_parallel(fn, items, workers=self.concurrency, name="parts")

    def write(self, parts: Mapping[str, dict[str, Any]], known: Iterable[str] = ()) -> int:
        """Create the parts not ``known`` to exist (an existing one is the same: content-addressed)."""
        todo = [p for i, p in sorted(parts.items()) if i not in set(known)]
        if not todo:
            return 0
        if not self._bag_ready:
            self.chef.data_bags.ensure(PARTS_BAG)
            self._bag_ready = True

        def create(item: dict[str, Any]) -> None:
            try:
                self.chef.data_bags.create_item(PARTS_BAG, item)
            except Conflict:
                pass
            self._keep(item)

        self._parallel(create, todo)
        return len(todo)

    def fetch(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The parts of ``ids`` that exist."""
        found = {i: item for i in ids for item in (self._recall(i),) if item is not None}

        def get(part_id: str) -> tuple[str, dict[str, Any] | None]:
            try:
                item = self.chef.data_bags.find_item(PARTS_BAG, part_id)
            except NotFound:
                return part_id, None
            if item is not None and item.get("id") == part_id:
                self._keep(item)
            return part_id, item

        found.update((i, item) for i, item in self._parallel(get, [i for i in ids if i not in found])
                     if item is not None)
        return found

    def join(self, document: Any) -> Any:
        """``document`` whole (see :func:`join`)."""
        return join(document, self.fetch)

    def delete(self, ids: list[str]) -> None:
        """Delete parts no document names any more (absent ones are fine)."""
        def delete(part_id: str) -> None:
            with self._lock:
                self._cached -= len(self._cache.pop(part_id, ""))
            try:
                self.chef.data_bags.delete_item(PARTS_BAG, part_id)
            except NotFound:
                pass

        if ids:
            self._parallel(delete, ids)

    def delete_owner(self, owner: str) -> None:
        """Delete every part of ``owner`` (a proposal being deleted)."""
        try:
            ids = [i for i in self.chef.data_bags.items(PARTS_BAG) if i.startswith(owner + "-")
                   and len(i) == len(owner) + 25]
        except NotFound:
            return
        self.delete(ids)
