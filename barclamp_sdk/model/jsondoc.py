"""Small tools for JSON documents: dotted paths, diffs, fingerprints, merges."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from barclamp_sdk.model import textdiff

_MISSING = object()


def now_iso() -> str:
    """The current UTC time as documents record it (``2026-12-02T01:21:44Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def canonical_json(data: Any) -> str:
    """Stable JSON text (sorted keys, no spaces): equal data, equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(data: Any) -> str:
    """A short content hash of JSON data."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:20]


def get_path(data: Mapping[str, Any], path: str, default: Any = _MISSING) -> Any:
    """``get_path(d, "volume.eqlx.san_ip")``; KeyError (or ``default``) if absent."""
    node: Any = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            if default is _MISSING:
                raise KeyError(path)
            return default
    return node


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path, creating intermediate objects."""
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def unset_path(data: dict[str, Any], path: str) -> bool:
    """Remove a dotted path; False if it was not there."""
    parts = path.split(".")
    node: Any = data
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    return False


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``overlay`` merged into ``base`` (hashes merge, the rest replaces)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class Change:
    """One difference between two documents."""

    path: str
    old: Any = None
    new: Any = None
    kind: str = "changed"  # added | removed | changed
    #: The path as keys (unambiguous when keys hold dots, like node names).
    keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.path} = {canonical_json(self.new)}"
        if self.kind == "removed":
            return f"- {self.path} (was {canonical_json(self.old)})"
        return f"~ {self.path}: {canonical_json(self.old)} -> {canonical_json(self.new)}"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "old": self.old, "new": self.new}


def diff(old: Any, new: Any, path: str = "") -> list[Change]:
    """Structural differences between two JSON documents, by dotted path."""
    return list(_diff(old, new, path, tuple(path.split(".")) if path else ()))


def _diff(old: Any, new: Any, path: str, keys: tuple[str, ...]) -> Iterator[Change]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            child = f"{path}.{key}" if path else str(key)
            child_keys = (*keys, str(key))
            if key not in new:
                yield Change(child, old=old[key], kind="removed", keys=child_keys)
            elif key not in old:
                yield Change(child, new=new[key], kind="added", keys=child_keys)
            else:
                yield from _diff(old[key], new[key], child, child_keys)
    elif old != new:
        yield Change(path or ".", old=old, new=new, keys=keys)


def unified_diff(old: Any, new: Any, old_label: str, new_label: str) -> str:
    """A unified text diff of two documents' pretty JSON."""
    def lines(doc: Any) -> list[str]:
        return json.dumps(doc, indent=2, sort_keys=True).splitlines(keepends=True)

    return "".join(textdiff.unified_diff(lines(old), lines(new), old_label, new_label))
