"""Conduits: logical interfaces (``intf0``, ``intf1`` ...) mapped onto a machine's NICs.

A conduit map entry's ``pattern`` is matched against
``<mode>/<number of NICs>/<role>`` (Crowbar matched the number of 1 Gb
adapters; ``team/.*/.*`` matches every machine in team mode). Its conduits
list interfaces by speed and order: ``1g1`` is the first 1 Gb NIC, ``10g2``
the second 10 Gb one; ``?1g1`` is the first 1 Gb NIC or, if there is none,
the first NIC of any speed, the fastest first; ``+1g1`` the first at least
1 Gb. NICs are ordered by name (bus order); a NIC whose speed is unknown
counts as 1 Gb. A conduit of more than one NIC in ``team`` mode is a bond
with the teaming mode (Linux bonding mode 0-6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SPEEDS = {"10m": 10, "100m": 100, "1g": 1000, "10g": 10000, "25g": 25000, "40g": 40000, "100g": 100000}
_TOKEN = re.compile(r"^([?+]?)(10m|100m|1g|10g|25g|40g|100g)(\d+)$")


@dataclass(frozen=True)
class Nic:
    """A physical interface: its name and speed in Mb/s."""

    name: str
    speed: int = 1000


@dataclass
class Conduit:
    """One logical interface resolved on one machine."""

    name: str
    interfaces: list[str] = field(default_factory=list)
    #: Linux bonding mode when the conduit is a team, else None.
    team_mode: int | None = None
    #: ``if_list`` entries no NIC of the machine matches.
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"interfaces": self.interfaces, "team_mode": self.team_mode, "missing": self.missing}


def check_token(token: str) -> str | None:
    """Why ``token`` is no interface reference (``1g1``, ``?10g1``, ``+1g2``), or None."""
    if _TOKEN.match(token) is None:
        return f"{token!r} is no interface reference (speed and position, like 1g1, ?10g1 or +1g2)"
    return None


def pick(token: str, nics: Sequence[Nic], used: set[str]) -> str | None:
    """The NIC ``token`` names among ``nics`` (None: no such NIC)."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    flag, speed_name, position = match.group(1), SPEEDS[match.group(2)], int(match.group(3))
    ordered = sorted(nics, key=lambda n: n.name)
    exact = [n for n in ordered if n.speed == speed_name]
    if flag == "+":
        exact = [n for n in ordered if n.speed >= speed_name]
    if len(exact) >= position:
        return exact[position - 1].name
    if flag == "?":
        fallback = [n for n in sorted(ordered, key=lambda n: -n.speed) if n.name not in used]
        return fallback[0].name if fallback else None
    return None


def resolve(conduit_map: Sequence[Mapping[str, Any]], mode: str, team_mode: int, nics: Sequence[Nic],
            roles: Sequence[str] = ()) -> dict[str, Conduit]:
    """The conduits of one machine: the first map entry matching it, resolved onto its NICs."""
    keys = [f"{mode}/{len(nics)}/{role}" for role in (roles or [""])]
    for entry in conduit_map:
        if any(re.fullmatch(str(entry.get("pattern", "")), key) for key in keys):
            conduits = {}
            for name, spec in (entry.get("conduit_list") or {}).items():
                conduit = Conduit(name)
                for token in spec.get("if_list") or []:
                    found = pick(token, nics, set(conduit.interfaces))
                    if found is None:
                        conduit.missing.append(token)
                    elif found not in conduit.interfaces:
                        conduit.interfaces.append(found)
                if mode == "team" and len(conduit.interfaces) > 1:
                    own = spec.get("team_mode")
                    conduit.team_mode = int(own if own is not None else team_mode)
                conduits[name] = conduit
            return conduits
    return {}
