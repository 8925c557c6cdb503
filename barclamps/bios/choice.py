"""Choosing a machine's BIOS and RAID sets: the ``bios_map`` and the per-family set files."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from barclamp_sdk import Attributes

SETS_DIR = Path(__file__).parent / "sets"


class MapEntry(Attributes):
    pattern: str
    bios_set: str
    raid_set: str



@cache
def families() -> list[dict[str, Any]]:
    """The settings-set files, most specific first (generic last)."""
    loaded = [json.loads(path.read_text()) for path in sorted(SETS_DIR.glob("*.json"))]
    return sorted(loaded, key=lambda f: not f.get("match"))


def family_of(machine: Any) -> dict[str, Any]:
    for family in families():
        match = family.get("match") or {}
        if (match.get("manufacturer", "") in machine.manufacturer
                and machine.product.startswith(match.get("product_prefix", ""))):
            return family
    raise LookupError("no generic settings set")


def choose_sets(bios_map: list[MapEntry], roles: list[str]) -> tuple[str, str, str]:
    """(bios_set, raid_set, why) from the first map entry a role matches.

    A machine with no roles yet is matched as the empty role (so ``.*`` applies).
    """
    for entry in bios_map:
        for role in roles or [""]:
            if re.fullmatch(entry.pattern, role):
                return entry.bios_set, entry.raid_set, f"because of {role}" if role else "no roles yet"
    return "default", "", "no bios_map entry matched"


def target_settings(machine: Any, bios_set: str) -> dict[str, str]:
    """The family's default set with ``bios_set`` laid over it."""
    sets = family_of(machine)["sets"]
    return {**sets.get("default", {}), **sets.get(bios_set, {})}
