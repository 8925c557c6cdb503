"""What a barclamp's hooks can reach: other proposals, machines, secrets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from barclamp_sdk.errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from barclamp_sdk.api import Crowbar
    from barclamp_sdk.barclamp import Barclamp
    from barclamp_sdk.document import Proposal
    from barclamp_sdk.inventory import Inventory
    from barclamp_sdk.secrets import SecretStore


class Context:
    """Passed to every hook: the API, scoped helpers, and a logger."""

    def __init__(self, crowbar: Crowbar, barclamp: Barclamp) -> None:
        self.crowbar = crowbar
        self.barclamp = barclamp
        self.log = logging.getLogger(f"barclamp.{barclamp.name}")
        self._inventory: Inventory | None = None

    @property
    def secrets(self) -> SecretStore:
        return self.crowbar.secrets

    def inventory(self) -> Inventory:
        """The cluster inventory (read once per context)."""
        if self._inventory is None:
            self._inventory = self.crowbar.machines.inventory()
        return self._inventory

    def is_committed(self, proposal: Proposal) -> bool:
        """Whether the proposal has been committed (its config role exists)."""
        return self.crowbar.chef.roles.find(proposal.config_role) is not None

    def find_proposal(self, barclamp: str, name: str | None = None, *,
                      committed: bool = True, purpose: str = "") -> Proposal:
        """Find another barclamp's proposal: the one named, or the only one.

        With ``committed`` only committed proposals count. The errors say
        what to create or choose.
        """
        why = f" ({purpose})" if purpose else ""
        if name:
            found = self.crowbar.proposals.store.find(barclamp, name)
            if found is None:
                raise ValidationError(
                    f"no {barclamp} proposal {name!r}{why}; create it with "
                    f"`crowbar {barclamp} proposal create {name}`"
                )
            if committed and not self.is_committed(found):
                raise ValidationError(
                    f"{barclamp} proposal {name!r} is not committed{why}; commit it with "
                    f"`crowbar {barclamp} proposal commit {name}`"
                )
            return found
        candidates = self.crowbar.proposals.store.documents(barclamp)
        if committed:
            candidates = [p for p in candidates if self.is_committed(p)]
        if not candidates:
            state = "committed " if committed else ""
            raise ValidationError(
                f"no {state}{barclamp} proposal exists{why}; create and commit one with "
                f"`crowbar {barclamp} proposal create default` and "
                f"`crowbar {barclamp} proposal commit default`"
            )
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise ValidationError(
                f"several {barclamp} proposals exist ({names}){why}; name the one to use"
            )
        return candidates[0]

    def require_barclamp(self, name: str) -> Barclamp:
        if name not in self.crowbar.barclamps:
            raise NotFoundError(f"barclamp {name} is not installed")
        return self.crowbar.barclamps.get(name)
