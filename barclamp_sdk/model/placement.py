"""Placement helpers barclamps share, so they choose alike and say why.

Each helper returns machines in a stable order (ties broken by name), so the
same inventory always gives the same proposal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from barclamp_sdk.model.inventory import Inventory, Machine
from barclamp_sdk.model.spec import Element


def is_managed_hypervisor(machine: Machine) -> bool:
    """A bare-metal or clustered hypervisor host (XenServer, ESX): its
    hypervisor, not chef-client, manages what runs on it."""
    return machine.virtualization_role == "host" and machine.virtualization_system in ("xen", "vmware")


def runs_services(machine: Machine) -> str | None:
    """``Element.accepts`` check: refuse managed hypervisor hosts."""
    if is_managed_hypervisor(machine):
        return (f"it is a {machine.virtualization_system} host managed by its hypervisor; "
                "a role on it would make a second master")
    return None


def general_purpose(machines: Iterable[Machine]) -> list[Machine]:
    """Machines that are not managed hypervisors (they run services)."""
    return [m for m in machines if not is_managed_hypervisor(m)]


def best_controller(machines: Sequence[Machine]) -> Machine | None:
    """The machine best suited to run control services: the most memory
    among those that are not storage-heavy (any machine if all are)."""
    pool = [m for m in general_purpose(machines) if not m.storage_heavy] or general_purpose(machines)
    if not pool:
        return None
    return max(pool, key=lambda m: (m.memory_bytes, m.cpu_count, _reverse_name(m.name)))


def most_free_disks(machines: Iterable[Machine], owner: str | None = None) -> list[Machine]:
    """Machines with free data disks, the most (then the largest) first."""
    with_disks = [m for m in machines if m.free_disks(owner)]
    return sorted(with_disks, key=lambda m: (-len(m.free_disks(owner)),
                                             -sum(d.size_bytes for d in m.free_disks(owner)), m.name))


def odd_quorum(size: int, choices: Sequence[int] = (1, 3, 5)) -> int:
    """An odd quorum size for a cluster of ``size`` machines: 1 below 3
    machines, 3 below 20, 5 from 20 on (never more than ``size``)."""
    if size < 3:
        wanted = choices[0]
    elif size < 20:
        wanted = choices[1]
    else:
        wanted = choices[2]
    fitting = [c for c in choices if c <= max(size, 1)]
    return min(wanted, max(fitting))


def names(machines: Iterable[Machine]) -> list[str]:
    return [m.name for m in machines]


def short(machines: Sequence[str], limit: int = 4) -> str:
    """A short list of machine names for notes."""
    shown = ", ".join(machines[:limit])
    return shown + (f" and {len(machines) - limit} more" if len(machines) > limit else "") if machines else "none"


def _reverse_name(name: str) -> tuple[int, ...]:
    # max() with this key prefers the alphabetically first name on ties.
    return tuple(-ord(c) for c in name)


def platform_refused(machines: Iterable[Machine], elements: Iterable[Element]) -> dict[str, str]:
    """Machines no element accepts by platform (Crowbar's ``platform`` /
    ``exclude_platform``): machine name -> why (the first element's reason)."""
    elements = list(elements)
    refused = {}
    for machine in machines:
        reasons = [machine.platform_refusal(e.platform, e.exclude_platform) for e in elements]
        if elements and all(reasons):
            refused[machine.name] = str(reasons[0])
    return refused


def on_supported_platforms(proposal: Any, inventory: Inventory) -> Inventory:
    """The inventory a barclamp places from: machines some element supports.

    The machines left out are named in one note of ``proposal``, with why.
    """
    refused = platform_refused(inventory, proposal.definition.elements)
    if not refused:
        return inventory
    shown = [f"{name} ({reason.removeprefix('its platform ').split(' is ')[0]})"
             for name, reason in sorted(refused.items())]
    first = next(iter(sorted(refused.items())))[1]
    proposal.note(f"left out {len(refused)} machine(s) whose platform this barclamp's roles do not run on: "
                  f"{short(shown, limit=8)}; {first.split('(', 1)[-1].rstrip(')') if '(' in first else first}")
    return Inventory(m for m in inventory if m.name not in refused)


def drop_platform_refused(proposal: Any, inventory: Inventory) -> list[str]:
    """Take each element off machines whose platform it does not support
    (whatever placed it there), with a note; returns what was dropped."""
    dropped = []
    for element in proposal.definition.elements:
        for node in list(proposal.elements.get(element.name, [])):
            machine = inventory.get(node)
            reason = machine.platform_refusal(element.platform, element.exclude_platform) if machine else None
            if reason:
                proposal.unassign(element.name, node)
                proposal.note(f"{element.name} not placed on {node}: {reason}")
                dropped.append(f"{element.name}@{node}")
    return dropped
