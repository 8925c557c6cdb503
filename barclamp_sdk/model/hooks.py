"""What a barclamp's hooks can reach: other proposals, machines, secrets.

A :class:`Context` is handed to every hook of a barclamp
(``create_proposal``, ``validate``, ``apply_pre``, ``on_transition``, ...).
It is the barclamp's whole window on the cluster: everything a barclamp may
read or do goes through its methods, so barclamps need nothing but the
public API. The services behind it are wired by the composition root
(:class:`barclamp_sdk.api.Crowbar`) as a :class:`HookServices`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.model.addresses import AddressBook, AllocationReport, NetworkSpec
from barclamp_sdk.model.bmctrust import ConfirmedBMC
from barclamp_sdk.model.cluster import ClusterView
from barclamp_sdk.model.inventory import BlockDevice, Inventory, Machine
from barclamp_sdk.model.proposal import Proposal, claims_of_others
from barclamp_sdk.model.secrets import SecretRef, SecretStore
from barclamp_sdk.model.spec import BarclampSpec


@dataclass(frozen=True)
class HookServices:
    """The model services hooks use, as the composition root hands them out."""

    secrets: SecretStore
    barclamp: Callable[[str], BarclampSpec]  # NotFoundError when not installed
    installed: Callable[[str], bool]
    find_proposal: Callable[[str, str], Proposal | None]
    proposals: Callable[[str | None], list[Proposal]]
    is_committed: Callable[[Proposal], bool]
    inventory: Callable[[Iterable[str] | None], Inventory]
    machines: Callable[[Iterable[str] | None], ClusterView]
    record_hardware: Callable[[Mapping[str, Mapping[str, Any]], Mapping[str, str]], None]
    applied: Callable[[str, str], Proposal | None]
    confirmed_bmc: Callable[[str], ConfirmedBMC | None]
    #: Server-mastered addresses (None: not wired, as in tests of other services).
    addresses: AddressBook | None = None

    def context(self, barclamp: BarclampSpec, *, draft: bool = False, cluster: ClusterView | None = None,
                inventory: Inventory | None = None) -> Context:
        """A new context for one hook call (or one command) of ``barclamp``.

        ``cluster`` and ``inventory``: whole-cluster snapshots the command read already (its hooks reuse them).
        """
        return Context(self, barclamp, draft=draft, cluster=cluster, inventory=inventory)


class Context:
    """Passed to every hook: scoped helpers over the cluster, and a logger."""

    def __init__(self, services: HookServices, barclamp: BarclampSpec, *, draft: bool = False,
                 cluster: ClusterView | None = None, inventory: Inventory | None = None) -> None:
        self._services = services
        self.barclamp = barclamp
        #: True while a proposal is saved (not committed): things needed only
        #: to apply it (credentials, full element counts) may still be missing.
        self.draft = draft
        self.log = logging.getLogger(f"barclamp.{barclamp.name}")
        self._inventory = inventory
        self._cluster = cluster
        self._planned: dict[tuple[str, str], str] | None = None

    @property
    def secrets(self) -> SecretStore:
        """The secret store (``ctx.secrets.get(ref)`` reads a secret)."""
        return self._services.secrets

    def secret(self, ref: SecretRef | dict[str, Any]) -> Any:
        """The plain value of a secret setting."""
        return self._services.secrets.get(ref)

    # -- machines -------------------------------------------------------------------------

    def inventory(self, names: Iterable[str] | None = None) -> Inventory:
        """The cluster inventory (the whole one is read once per context), or that of ``names``.

        Once the whole inventory is held, ``names`` are taken from it (those it lacks are read).
        """
        if names is not None:
            wanted = list(names)
            held = self._inventory
            if held is None:
                return self._services.inventory(wanted)
            missing = [n for n in wanted if n not in held]
            read = self._services.inventory(missing) if missing else Inventory([])
            return Inventory(m for n in wanted for m in (held.get(n) or read.get(n),) if m is not None)
        if self._inventory is None:
            self._inventory = self._services.inventory(None)
        return self._inventory

    def machines(self, names: Iterable[str] | None = None) -> ClusterView:
        """Every machine's Crowbar record (state, roles, pending proposals, hardware), or those of ``names``.

        Pass ``names`` when a hook needs a few machines: they are read from
        their roles, not by searching the whole cluster.
        """
        if names is None and self._cluster is not None:
            return self._cluster
        return self._services.machines(None if names is None else list(names))

    def record_hardware(self, hardware: Mapping[str, Mapping[str, Any]],
                        problems: Mapping[str, str] | None = None) -> None:
        """Record facts the barclamp established under ``hardware`` of machines' Crowbar data.

        ``problems`` (machine -> reason) puts those machines in ``problem``
        through the state machine, the reason prefixed with the barclamp.
        """
        self._services.record_hardware(
            hardware, {n: f"{self.barclamp.name}: {r}" for n, r in (problems or {}).items()})

    def confirmed_bmc(self, name: str) -> ConfirmedBMC | None:
        """The BMC of machine ``name`` an operator or a trusted source confirmed (None: none yet).

        The only endpoint credentials may go to; what the node reports is never one.
        """
        return self._services.confirmed_bmc(name)

    def free_disks(self, machine: Machine, proposal: Proposal) -> tuple[BlockDevice, ...]:
        """Data disks of ``machine`` that no other proposal has or plans to claim."""
        if self._planned is None:
            self._planned = claims_of_others(proposal, self._services.proposals(None))
        owner = proposal.ref.key
        return tuple(d for d in machine.free_disks(owner) if (machine.name, d.name) not in self._planned)

    # -- addresses ------------------------------------------------------------------------

    @property
    def addresses(self) -> AddressBook:
        """The address book: every allocated address, server-mastered (see :mod:`barclamp_sdk.model.addresses`)."""
        if self._services.addresses is None:
            raise NotFoundError("no address book is wired into this context")
        return self._services.addresses

    def network(self, name: str) -> NetworkSpec | None:
        """Network ``name`` as committed in the network proposal (None: not committed, or no such network)."""
        if self._services.addresses is None:
            return None
        return self._services.addresses.networks().get(name)

    def address_of(self, machine: str, network: str) -> str | None:
        """The address allocated to ``machine`` on ``network`` (from its role; None: none)."""
        entry = self.addresses.of_machine(machine).get(network) or {}
        return str(entry["address"]) if entry.get("address") else None

    def allocate_addresses(self, network: str, machines: Iterable[str], *, user: str,
                           range_name: str | None = None) -> AllocationReport:
        """One address of ``network`` for each machine (kept when it has one), needed by ``user``."""
        return self.addresses.allocate(network, machines, user=user, range_name=range_name)

    def release_addresses(self, machines: Iterable[str], *, networks: Iterable[str] | None = None,
                          user: str | None = None) -> dict[str, list[str]]:
        """Free machines' addresses that no user needs any more (``user`` removed first)."""
        return self.addresses.release(machines, networks=networks, user=user)

    # -- other proposals ----------------------------------------------------------------

    def installed(self, barclamp: str) -> bool:
        """Whether barclamp ``barclamp`` is installed."""
        return self._services.installed(barclamp)

    def proposals(self, barclamp: str) -> list[Proposal]:
        """Every proposal of ``barclamp`` (none when it is not installed)."""
        if not self._services.installed(barclamp):
            return []
        return self._services.proposals(barclamp)

    def applied(self, barclamp: str, name: str) -> Proposal | None:
        """The revision of ``barclamp/name`` last committed (None: never committed)."""
        return self._services.applied(barclamp, name)

    def is_committed(self, proposal: Proposal) -> bool:
        """Whether the proposal has been committed (its config role exists)."""
        return self._services.is_committed(proposal)

    def find_proposal(self, barclamp: str, name: str | None = None, *, purpose: str = "") -> Proposal:
        """Find another barclamp's proposal: the one named, or the only one.

        Committed proposals are preferred; an uncommitted one is accepted (the
        caller makes it a commit dependency, so a commit waits for it). The
        errors say what to create or choose.
        """
        why = f" ({purpose})" if purpose else ""
        if not self._services.installed(barclamp):
            raise ValidationError(f"barclamp {barclamp} is not installed{why}")
        if name:
            found = self._services.find_proposal(barclamp, name)
            if found is None:
                raise ValidationError(
                    f"no {barclamp} proposal {name!r}{why}; create it with "
                    f"`crowbar {barclamp} proposal create {name}`"
                )
            return found
        candidates = self._services.proposals(barclamp)
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

    def require_barclamp(self, name: str) -> BarclampSpec:
        """Another installed barclamp (NotFoundError when it is not installed)."""
        if not self._services.installed(name):
            raise NotFoundError(f"barclamp {name} is not installed")
        return self._services.barclamp(name)
