"""What a barclamp's hooks can reach: other proposals, machines, secrets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from barclamp_sdk.errors import CrowbarError, NotFoundError, ValidationError

if TYPE_CHECKING:
    from barclamp_sdk.api import Crowbar
    from barclamp_sdk.model.barclamp import Barclamp
    from barclamp_sdk.model.proposal import Proposal
    from barclamp_sdk.model.inventory import BlockDevice, Inventory, Machine
    from barclamp_sdk.model.secrets import SecretStore


class Context:
    """Passed to every hook: the API, scoped helpers, and a logger."""

    def __init__(self, crowbar: Crowbar, barclamp: Barclamp, *, draft: bool = False) -> None:
        self.crowbar = crowbar
        self.barclamp = barclamp
        #: True while a proposal is saved (not committed): things needed only
        #: to apply it (credentials, full element counts) may still be missing.
        self.draft = draft
        self.log = logging.getLogger(f"barclamp.{barclamp.name}")
        self._inventory: Inventory | None = None
        self._planned: dict[tuple[str, str], str] | None = None

    @property
    def secrets(self) -> SecretStore:
        return self.crowbar.secrets

    def inventory(self) -> Inventory:
        """The cluster inventory (read once per context)."""
        if self._inventory is None:
            self._inventory = self.crowbar.machines.inventory()
        return self._inventory

    def free_disks(self, machine: Machine, proposal: Proposal) -> tuple[BlockDevice, ...]:
        """Data disks of ``machine`` that no other proposal has or plans to claim."""
        if self._planned is None:
            self._planned = {}
            for other in self.crowbar.proposals.store.documents():
                if other.id == proposal.id:
                    continue
                try:
                    planned = other.definition.claims(other)
                except CrowbarError:
                    continue
                for node, devices in planned.items():
                    for device in devices:
                        self._planned[(node, device)] = str(other.ref)
        owner = proposal.ref.key
        return tuple(d for d in machine.free_disks(owner) if (machine.name, d.name) not in self._planned)

    def is_committed(self, proposal: Proposal) -> bool:
        """Whether the proposal has been committed (its config role exists)."""
        return self.crowbar.chef.roles.find(proposal.config_role) is not None

    def find_proposal(self, barclamp: str, name: str | None = None, *, purpose: str = "") -> Proposal:
        """Find another barclamp's proposal: the one named, or the only one.

        Committed proposals are preferred; an uncommitted one is accepted (the
        caller makes it a commit dependency, so a commit waits for it). The
        errors say what to create or choose.
        """
        why = f" ({purpose})" if purpose else ""
        if barclamp not in self.crowbar.barclamps:
            raise ValidationError(f"barclamp {barclamp} is not installed{why}")
        if name:
            found = self.crowbar.proposals.store.find(barclamp, name)
            if found is None:
                raise ValidationError(
                    f"no {barclamp} proposal {name!r}{why}; create it with "
                    f"`crowbar {barclamp} proposal create {name}`"
                )
            return found
        candidates = self.crowbar.proposals.store.documents(barclamp)
        committed = [p for p in candidates if self.is_committed(p)]
        pool = committed or candidates
        if not pool:
            raise ValidationError(
                f"no {barclamp} proposal exists{why}; create one with "
                f"`crowbar {barclamp} proposal create default`"
            )
        if len(pool) > 1:
            names = ", ".join(p.name for p in pool)
            raise ValidationError(f"several {barclamp} proposals exist ({names}){why}; name the one to use")
        return pool[0]

    def require_barclamp(self, name: str) -> Barclamp:
        if name not in self.crowbar.barclamps:
            raise NotFoundError(f"barclamp {name} is not installed")
        return self.crowbar.barclamps.get(name)
