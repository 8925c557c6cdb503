"""The public facade: one object that reaches everything.

>>> crowbar = barclamp_sdk.connect()              # settings as for ChefConfig.load
>>> crowbar.proposals.create("nova", "default")
>>> crowbar.proposals.commit("nova", "default")
>>> crowbar.machines.transition("d52-54-00-00-00-01.example.com", "ready")

Services: :attr:`Crowbar.machines`, :attr:`Crowbar.proposals`,
:attr:`Crowbar.queue`, :attr:`Crowbar.secrets`, :attr:`Crowbar.locks`,
:attr:`Crowbar.barclamps`; the transport is :attr:`Crowbar.chef`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from barclamp_sdk.model.barclamp import Barclamp, BarclampRegistry
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import ChefConfig
from barclamp_sdk.errors import CrowbarError, NotFound
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.machines import Machines
from barclamp_sdk.model.proposals import Proposals
from barclamp_sdk.model.queue import Queue
from barclamp_sdk.model.secrets import SecretStore


class Crowbar:
    """Crowbar's model on one Chef server."""

    def __init__(
        self,
        chef: ChefClient,
        *,
        barclamps: BarclampRegistry | Iterable[type[Barclamp]] | None = None,
        secret: bytes | None = None,
        lock_lease: float = 30.0,
        lock_timeout: float = 300.0,
        concurrency: int = 8,
        owner: str | None = None,
    ) -> None:
        self.chef = chef
        self.concurrency = concurrency
        if isinstance(barclamps, BarclampRegistry):
            self.barclamps = barclamps
        else:
            self.barclamps = BarclampRegistry(barclamps or ())
        self.locks = LockManager(chef, owner=owner, lease=lock_lease, timeout=lock_timeout)
        if secret is not None:
            self.secrets = SecretStore(chef, self.locks, secret)
        else:
            self.secrets = SecretStore.from_file(chef, self.locks, chef.config.encrypted_data_bag_secret)
        self.machines = Machines(self)
        self.proposals = Proposals(self)
        self.queue = Queue(self)

    def __repr__(self) -> str:
        return f"Crowbar({self.chef.base_url!r})"

    def install(self, *names: str) -> list[str]:
        """Upload barclamps' element roles (all installed barclamps by default)."""
        uploaded = []
        for barclamp in [self.barclamps.get(n) for n in names] if names else self.barclamps.all():
            for role in barclamp.element_roles():
                current = self.chef.roles.find(role["name"])
                if current is None:
                    self.chef.roles.create(role)
                elif any(current.get(k) != v for k, v in role.items() if k not in ("json_class", "chef_type")):
                    self.chef.roles.update(role["name"], role)
                else:
                    continue
                uploaded.append(role["name"])
        return uploaded

    def role(self, name: str) -> dict[str, Any]:
        """A Chef role by name (for inspection)."""
        try:
            return self.chef.roles.get(name)
        except NotFound:
            raise CrowbarError(f"no role {name!r} on the Chef server") from None


def connect(*, barclamps: Iterable[type[Barclamp]] | None = None, **settings: Any) -> Crowbar:
    """Connect to the Chef server configured as :meth:`ChefConfig.load` finds it."""
    options = {k: settings.pop(k) for k in ("lock_lease", "lock_timeout", "concurrency", "owner")
               if k in settings}
    return Crowbar(ChefClient(ChefConfig.load(**settings)), barclamps=barclamps, **options)
