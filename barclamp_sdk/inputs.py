"""Reading files and text a user gives, with limits.

Every document the CLI or the API reads from a user (``proposal edit
--file``, the editor flow, ``batch apply``, ``raw --data``, ``--set`` values)
goes through these readers, so hostile input is refused quickly, in one line
naming its source, before anything is written:

* at most :attr:`Limits.max_bytes` bytes (10 MiB by default);
* UTF-8 text only (a binary file is refused, naming the file and the offset);
* at most :attr:`Limits.max_depth` levels of nesting (64), in YAML and JSON
  (no ``RecursionError``);
* YAML aliases may expand the document to at most
  :attr:`Limits.max_nodes` nodes (100,000): a "billion laughs" bomb is
  refused after composing its (small, shared) node graph, before a single
  value is built, in milliseconds and a few MB;
* only JSON values come out: mappings with string keys, lists, strings,
  finite numbers, booleans and null. YAML timestamps stay strings; ``!!binary``,
  ``!!set`` and other tags are refused.

This module imports nothing of the model, so any layer can use it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from barclamp_sdk.errors import ValidationError


@dataclass(frozen=True)
class Limits:
    """Bounds on one input document."""

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 100_000


DEFAULT_LIMITS = Limits()


class _LimitExceeded(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and keeps timestamps as text."""

    max_depth = DEFAULT_LIMITS.max_depth

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise _LimitExceeded(f"nested more than {self.max_depth} levels deep (line {mark.line + 1})")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


# Timestamps are read as plain strings: documents must stay JSON.
_BoundedLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_JSON_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


def _expanded_size(root: Node, budget: int) -> int:
    """Nodes the graph expands to (aliases counted at every use); stops past ``budget``."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # Iterative post-order walk: no recursion, and each shared node is sized once.
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            total = 1
            for child in _children(node):
                total += sizes[id(child)]
                if total > budget:
                    raise _LimitExceeded(f"expands to more than {budget:,} values (YAML aliases)")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in active:
            raise _LimitExceeded("refers to itself (a recursive YAML alias)")
        active.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise _LimitExceeded("refers to itself (a recursive YAML alias)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_tags(root: Node) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in _JSON_TAGS and node.tag != "tag:yaml.org,2002:merge":
            shown = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise _LimitExceeded(f"holds {shown} (line {node.start_mark.line + 1}); only JSON values are allowed")
        stack.extend(_children(node))


def decode(data: bytes, source: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """UTF-8 bytes as text (a leading BOM dropped); refuses binary or oversized input."""
    if len(data) > limits.max_bytes:
        raise ValidationError(f"{source} is larger than {limits.max_bytes:,} bytes; refused")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{source} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "give a JSON or YAML text file") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_bytes(file: IO[bytes] | IO[str] | str | Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """At most ``limits.max_bytes + 1`` bytes from a path or an open file (binary or text)."""
    if isinstance(file, (str, Path)):
        try:
            with open(file, "rb") as handle:
                return handle.read(limits.max_bytes + 1)
        except OSError as exc:
            raise ValidationError(f"cannot read {file}: {exc.strerror or exc}") from None
    raw = getattr(file, "buffer", None)
    stream: Any = raw if raw is not None else file
    data = stream.read(limits.max_bytes + 1)
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)


def source_name(file: Any, default: str = "input") -> str:
    """A file's name for messages (``-`` is stdin)."""
    name = getattr(file, "name", None) if not isinstance(file, (str, Path)) else str(file)
    if name in (None, "-", "<stdin>", 0) or not isinstance(name, str):
        return "stdin" if name in ("-", "<stdin>", 0) else default
    return name


def load_yaml(text: str, source: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse YAML (JSON is YAML too) safely and within ``limits``; JSON values only."""
    if len(text) > limits.max_bytes:
        raise ValidationError(f"{source} is larger than {limits.max_bytes:,} bytes; refused")
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source} is not valid YAML (nor JSON): {_yaml_problem(exc)}") from None
    loader.max_depth = limits.max_depth
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, limits.max_nodes)
        _check_tags(node)
        data = loader.construct_document(node)
    except _LimitExceeded as exc:
        raise ValidationError(f"{source} {exc}; refused") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source} is not valid YAML (nor JSON): {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ValidationError(f"{source} is nested too deeply; refused") from None
    finally:
        loader.dispose()
    check_json_value(data, source)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"{where}{exc.problem or exc.context or 'invalid'}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def load_json(text: str, source: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse JSON within ``limits`` (depth checked before parsing)."""
    if len(text) > limits.max_bytes:
        raise ValidationError(f"{source} is larger than {limits.max_bytes:,} bytes; refused")
    if json_depth(text) > limits.max_depth:
        raise ValidationError(f"{source} is nested more than {limits.max_depth} levels deep; refused")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"{source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError(f"{source} is nested too deeply; refused") from None
    check_json_value(data, source)
    return data


def read_document(file: IO[bytes] | IO[str] | str | Path, source: str | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> Any:
    """A whole JSON or YAML document from a path or an open file, within ``limits``."""
    name = source or source_name(file)
    return load_yaml(decode(read_bytes(file, limits), name, limits), name, limits)


def read_json(file: IO[bytes] | IO[str] | str | Path, source: str | None = None,
              limits: Limits = DEFAULT_LIMITS) -> Any:
    """A JSON document from a path or an open file, within ``limits``."""
    name = source or source_name(file)
    return load_json(decode(read_bytes(file, limits), name, limits), name, limits)


def check_json_value(data: Any, source: str) -> None:
    """Refuse anything that is not a plain JSON value (string keys, finite numbers)."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValidationError(f"{source}: {path or 'the document'} has the key {key!r}; "
                                          "keys must be strings (quote it)")
                stack.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError(f"{source}: {path or 'the document'} is {value}; numbers must be finite")
        elif value is not None and not isinstance(value, (str, int, bool)):
            raise ValidationError(f"{source}: {path or 'the document'} is a {type(value).__name__}, "
                                  "not a JSON value")
