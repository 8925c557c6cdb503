"""Choosing machines by state, element and hardware: what ``crowbar machines list`` filters on.

Pure: a :class:`MachineFilter` looks at a machine's Crowbar record and, for
the hardware criteria, at its typed facts (:class:`~barclamp_sdk.model.inventory.Machine`);
:func:`hardware_summary` is the hardware a listing shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from barclamp_sdk.errors import ValidationError
from barclamp_sdk.model.cluster import MachineRecord
from barclamp_sdk.model.inventory import Machine
from barclamp_sdk.model.states import check_state


@dataclass(frozen=True)
class MachineFilter:
    """Which machines to list; every criterion given must hold (``None`` means any).

    * ``state``: the machine's state (one of :data:`~barclamp_sdk.STATES`);
    * ``element``: it holds this element's role (``ceph-osd``, ``nova-compute`` ...);
    * ``hardware``: its hardware profile (``crowbar_wall.hardware_profile``, which the
      simulated fleet reports: ``compute``, ``storage``, ``vm`` ...) equals it, or its
      manufacturer and product contain it (``R640``, ``poweredge r740xd2``), case ignored;
    * ``min_disks``: it has at least this many data disks (neither the OS disk,
      removable, nor in use by the OS: :attr:`Machine.data_disks`);
    * ``allocated``: ``True`` for allocated machines, ``False`` for those waiting.
    """

    state: str | None = None
    element: str | None = None
    hardware: str | None = None
    min_disks: int | None = None
    allocated: bool | None = None

    def __post_init__(self) -> None:
        if self.state is not None:
            check_state(self.state)
        if self.min_disks is not None and (isinstance(self.min_disks, bool) or self.min_disks < 0):
            raise ValidationError(f"min_disks must be a count of 0 or more, not {self.min_disks!r}")
        if self.hardware is not None and not self.hardware.strip():
            raise ValidationError("hardware must name a profile or a product, e.g. 'compute' or 'R640'")

    @property
    def needs_facts(self) -> bool:
        """True when a criterion reads the machine's facts (its node), not only its record."""
        return self.hardware is not None or self.min_disks is not None

    def matches_record(self, record: MachineRecord) -> bool:
        """Whether the criteria on Crowbar's record (state, element, allocation) hold."""
        if self.state is not None and record.state != self.state:
            return False
        if self.allocated is not None and record.allocated != self.allocated:
            return False
        return self.element is None or self.element in record.elements

    def matches(self, record: MachineRecord, facts: Machine | None = None) -> bool:
        """Whether the machine (its record, and its facts when :attr:`needs_facts`) is chosen."""
        if not self.matches_record(record):
            return False
        if not self.needs_facts:
            return True
        if facts is None:
            return False  # no node (yet): its hardware is unknown
        if self.min_disks is not None and len(facts.data_disks) < self.min_disks:
            return False
        return self.hardware is None or hardware_matches(facts, self.hardware)


def hardware_matches(machine: Machine, wanted: str) -> bool:
    """``wanted`` is the machine's hardware profile, or part of its manufacturer and product."""
    wanted = wanted.strip().lower()
    if machine.hardware_profile and machine.hardware_profile.lower() == wanted:
        return True
    return wanted in f"{machine.manufacturer} {machine.product}".lower()


def hardware_summary(machine: Machine | None) -> dict[str, Any]:
    """What a listing shows of a machine's hardware (``{}`` when its node is unknown).

    Keys: ``profile``, ``manufacturer``, ``product``, ``cpus``, ``memory_bytes``,
    ``disks`` (how many), ``data_disks`` (how many are free for data), ``disk_bytes``
    (their total size) and ``disk_names``.
    """
    if machine is None:
        return {}
    return {
        "profile": machine.hardware_profile,
        "manufacturer": machine.manufacturer,
        "product": machine.product,
        "cpus": machine.cpu_count,
        "memory_bytes": machine.memory_bytes,
        "disks": len(machine.disks),
        "data_disks": len(machine.data_disks),
        "disk_bytes": sum(d.size_bytes for d in machine.disks),
        "disk_names": [d.name for d in machine.disks],
    }
