"""Adopting a Crowbar 1.x per-node role already on the Chef server.

Crowbar 1.x kept its data for a machine at the top of the role's
``default_attributes`` (``NodeObject#crowbar`` *is* that hash): ``state``,
``state_owner``, ``state_change_time``, ``crowbar-revision``,
``run_list_map``, and under ``crowbar``: ``allocated``, ``network``,
``pending``, ``hardware``, ``disks`` (each with a ``usage``: ``OS``,
``Storage`` ...). barclamp-sdk keeps the same data under
``default_attributes.crowbar`` with ``crowbar.node`` naming the machine.

:func:`adopt` rewrites such a role into this library's shape, keeping every
key it had (the originals move to ``crowbar.crowbar_1x``), and says what it
read, so ``machines discover`` takes the machine over with its state, roles
and disk usage instead of failing on it.
"""

from __future__ import annotations

import copy
from typing import Any

from barclamp_sdk.model.states import STATES

#: Top-level ``default_attributes`` keys Crowbar 1.x's NodeObject wrote.
TOP_LEVEL_KEYS = ("state", "state_owner", "state_change_time", "crowbar-revision", "run_list_map")
#: Disk usages that leave a disk free for the storage barclamps.
FREE_USAGES = frozenset({"storage", "unused", "free", ""})
#: The owner recorded in ``claimed_disks`` for disks Crowbar 1.x used.
CLAIM_PREFIX = "crowbar-1.x"


def is_crowbar1x_role(role: dict[str, Any]) -> bool:
    """A ``crowbar-<node>`` role in Crowbar 1.x's shape (no ``crowbar.node``)."""
    attributes = role.get("default_attributes")
    if not isinstance(attributes, dict):
        return False
    crowbar = attributes.get("crowbar")
    if isinstance(crowbar, dict) and isinstance(crowbar.get("node"), str):
        return False
    return any(key in attributes for key in TOP_LEVEL_KEYS) or isinstance(crowbar, dict)


def adopt(role: dict[str, Any], node: str) -> tuple[dict[str, Any], list[str]]:
    """The role rewritten in barclamp-sdk's shape, and notes on what was read.

    The state is kept when this library knows it (else ``discovered``, noted);
    ``run_list_map`` entries without states get Crowbar's default ``all``;
    disks whose ``usage`` is not storage are claimed by ``crowbar-1.x:<usage>``
    so no barclamp offers them for data.
    """
    adopted = copy.deepcopy(role)
    attributes = adopted.setdefault("default_attributes", {})
    old = {key: attributes.pop(key) for key in TOP_LEVEL_KEYS if key in attributes}
    crowbar = attributes.get("crowbar")
    if not isinstance(crowbar, dict):
        crowbar = {}
    attributes["crowbar"] = crowbar
    notes = []
    state = str(old.get("state") or crowbar.get("state") or "")
    if state not in STATES:
        notes.append(f"Crowbar 1.x state {state or '(none)'!r} is not a state this library knows: "
                     "adopted as discovered")
        state = "discovered"
    crowbar.update({"node": node, "state": state})
    crowbar["allocated"] = bool(crowbar.get("allocated", state != "discovered"))
    if old.get("state_change_time"):
        crowbar["state_change_time"] = str(old["state_change_time"])
    run_list_map = {}
    for name, spec in (old.get("run_list_map") or crowbar.get("run_list_map") or {}).items():
        spec = spec if isinstance(spec, dict) else {}
        priority = spec.get("priority", 1000)
        if priority == -1001:  # Crowbar's tombstone of a removed role
            continue
        run_list_map[str(name)] = {"priority": int(priority), "states": list(spec.get("states") or ["all"]),
                                   "proposal": str(spec.get("proposal", ""))}
    crowbar["run_list_map"] = run_list_map
    claims = {str(k): str(v) for k, v in (crowbar.get("claimed_disks") or {}).items()}
    disks = crowbar.get("disks") if isinstance(crowbar.get("disks"), dict) else {}
    for disk, info in sorted(disks.items()):
        usage = str((info or {}).get("usage", "")) if isinstance(info, dict) else ""
        if usage.strip().lower() not in FREE_USAGES:
            claims.setdefault(str(disk), f"{CLAIM_PREFIX}:{usage}")
    crowbar["claimed_disks"] = claims
    crowbar.setdefault("pending", {})
    crowbar["crowbar_1x"] = old
    crowbar["crowbar-revision"] = int(old.get("crowbar-revision") or 0)
    used = sorted(d for d, owner in claims.items() if owner.startswith(CLAIM_PREFIX))
    notes.insert(0, f"adopted the Crowbar 1.x role {role.get('name')}: state {state}, "
                    f"{len(run_list_map)} role(s), disk(s) in use {', '.join(used) or 'none'}")
    return adopted, notes
