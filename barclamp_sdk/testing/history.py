"""A history checker: several processes run random mixes of operations; nothing acknowledged is lost.

Each worker (``python -m barclamp_sdk.testing.history LOG INDEX SEED COUNT
BARCLAMP NAME KEY NODE``, connected by the environment as ``crowbar`` is) runs
COUNT random operations on one proposal: edits of its own KEY (each value new),
commit, deactivate, dequeue, delete, create, chef-client style saves of
its own NODE (the whole node read, changed and written back, as chef-client
does), and reboots of its NODE (``ready`` to ``readying``, or back: while one
machine is not ready a commit queues, so a dequeue has something to remove,
and its return to ``ready`` lets the queued commit proceed). It logs each
operation, one JSON line, with what it was told: success or the error, the
revision returned, when it started and ended.

:func:`check` then proves, from the logs and the final state:

* every acknowledged edit is present at the end, or superseded by a later
  acknowledged edit of the same key, or by an acknowledged delete or create
  that may have come after it (their times overlap or follow);
* revisions never repeat within one incarnation of the proposal: two
  acknowledged saves with no acknowledged delete possibly between them (one
  overlapping the span from the first save's start to the last one's end)
  never got the same revision, and the later of two that did not overlap got
  a higher one;
* every worker's last acknowledged node save is on its node.

Workers stop after COUNT operations (not after a time), so a busy machine only
makes the run slower, never different in what it checks.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from barclamp_sdk.api import Crowbar, connect
from barclamp_sdk.errors import CrowbarError
from barclamp_sdk.model.secrets import is_reference

#: Operation kinds and how often a worker picks each.
WEIGHTS = {"edit": 6, "commit": 3, "deactivate": 2, "dequeue": 3, "delete": 1, "create": 2, "node save": 2,
           "reboot": 2}
#: Where a worker's node saves go in the node (normal attributes).
NODE_KEY = "history_check"


def value_for(key: str, index: int, seq: int) -> str:
    """The new value of ``key`` a worker sets at its ``seq``-th operation (text, as ``--set`` takes it)."""
    if key in ("port",):
        return str(1024 + seq)
    if key.endswith("depth"):
        return str(seq)
    return f"w{index}-{seq}"


def worker(log: Path, index: int, seed: int, count: int, barclamp: str, name: str, key: str, node: str) -> None:
    """Run ``count`` random operations, logging each (see the module docstring)."""
    crowbar = connect()
    proposals = crowbar.proposals
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    with log.open("a") as out:
        for seq in range(count):
            kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
            entry: dict[str, Any] = {"worker": index, "seq": seq, "kind": kind, "start": time.time()}
            try:
                if kind == "edit":
                    entry.update(key=key, value=value_for(key, index, seq))
                    entry["revision"] = proposals.set(barclamp, name, {key: entry["value"]}).revision
                elif kind == "commit":
                    result = proposals.commit(barclamp, name)
                    entry.update(status=result.status, revision=result.revision)
                elif kind == "deactivate":
                    proposals.deactivate(barclamp, name)
                elif kind == "dequeue":
                    proposals.dequeue(barclamp, name)
                elif kind == "delete":
                    proposals.delete(barclamp, name)
                elif kind == "create":
                    entry["revision"] = proposals.create(barclamp, name).revision
                elif kind == "reboot":  # its boot scripts: ready -> readying (a commit queues), back to ready
                    back = "ready" if crowbar.machines.state(node) == "readying" else "readying"
                    entry["state"] = crowbar.machines.transition(node, back).state
                else:  # chef-client: the whole node read, changed, written back
                    whole = crowbar.chef.nodes.get(node)
                    whole.setdefault("normal", {}).setdefault(NODE_KEY, {})[str(index)] = seq
                    crowbar.chef.nodes.update(node, whole)
                entry["ok"] = True
            except CrowbarError as exc:
                entry.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
            entry["end"] = time.time()
            out.write(json.dumps(entry) + "\n")
            out.flush()


@dataclass
class HistoryReport:
    """What :func:`check` counted and found."""

    operations: Counter[str] = field(default_factory=Counter)
    acknowledged: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    pairs_checked: int = 0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {self.acknowledged[k]}/{self.operations[k]}" for k in sorted(self.operations))
        return (f"{sum(self.operations.values())} operations (acknowledged/attempted: {kinds}), "
                f"{self.pairs_checked} revision pairs checked, {len(self.violations)} violations")


def final_state(crowbar: Crowbar, barclamp: str, name: str, keys: list[str], nodes: list[str]) -> dict[str, Any]:
    """The end as the checker needs it: each key's value (secrets decrypted), each node's saves."""
    proposal = crowbar.proposals.store.find(barclamp, name)
    values: dict[str, Any] = {}
    if proposal is not None:
        for key in keys:
            value: Any = proposal.attributes
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if is_reference(value):
                value = crowbar.secrets.get(value)
            values[key] = value
    saved = {node: (crowbar.chef.nodes.get(node).get("normal") or {}).get(NODE_KEY, {}) for node in nodes}
    return {"exists": proposal is not None, "values": values, "nodes": saved}


def check(entries: list[dict[str, Any]], final: dict[str, Any], nodes: dict[int, str]) -> HistoryReport:
    """Prove the module's claims from the workers' logs and the final state (``nodes``: worker -> its node)."""
    report = HistoryReport()
    for e in entries:
        report.operations[e["kind"]] += 1
        (report.acknowledged if e["ok"] else report.refused)[e["kind"]] += 1
    acked = [e for e in entries if e["ok"]]
    resets = [e for e in acked if e["kind"] in ("delete", "create")]
    # Every acknowledged edit is there, or superseded (only its worker edits its key).
    for key in sorted({e["key"] for e in acked if e["kind"] == "edit"}):
        edits = sorted((e for e in acked if e["kind"] == "edit" and e["key"] == key), key=lambda e: e["seq"])
        last = edits[-1]
        if any(r["end"] > last["start"] for r in resets):
            continue  # a delete or re-create may have come after it
        got = final["values"].get(key) if final["exists"] else None
        if str(got) != last["value"]:
            report.violations.append(
                f"edit {key}={last['value']} (worker {last['worker']} #{last['seq']}, saved as revision "
                f"{last['revision']}) was acknowledged but the end has {got!r}, and nothing acknowledged came after it")
    # Revisions never repeat, and go forward, between two deletes.
    saves = sorted((e for e in acked if e.get("revision") is not None and e["kind"] in ("edit", "create")),
                   key=lambda e: e["start"])
    for a, b in combinations(saves, 2):
        # Each save took effect somewhere between its start and its end: a delete may lie between
        # the two from the first start to the last end (the earlier-started one may end last).
        if any(d["kind"] == "delete" and d["end"] > a["start"] and d["start"] < max(a["end"], b["end"])
               for d in resets):
            continue  # maybe another incarnation
        report.pairs_checked += 1
        if a["revision"] == b["revision"]:
            report.violations.append(f"revision {a['revision']} acknowledged twice: {_who(a)} and {_who(b)}")
        elif a["end"] < b["start"] and b["revision"] < a["revision"]:
            report.violations.append(f"revision went back: {_who(a)} got {a['revision']}, "
                                     f"then {_who(b)} got {b['revision']}")
    # chef-client style saves: the last acknowledged one of each worker is on its node.
    for index, node in nodes.items():
        mine = [e for e in acked if e["kind"] == "node save" and e["worker"] == index]
        if mine:
            last = max(e["seq"] for e in mine)
            got = final["nodes"].get(node, {}).get(str(index))
            if got != last:
                report.violations.append(f"node save #{last} of worker {index} on {node} was acknowledged, "
                                         f"but the node has #{got}")
    return report


def _who(entry: dict[str, Any]) -> str:
    return f"{entry['kind']} by worker {entry['worker']} #{entry['seq']}"


def read_logs(paths: list[Path]) -> list[dict[str, Any]]:
    """Every logged operation of every worker."""
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines() if line]


if __name__ == "__main__":
    log_path, index_, seed_, count_, barclamp_, name_, key_, node_ = sys.argv[1:9]
    worker(Path(log_path), int(index_), int(seed_), int(count_), barclamp_, name_, key_, node_)
