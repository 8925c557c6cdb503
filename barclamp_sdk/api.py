"""The public facade and the composition root: one object that reaches everything.

>>> crowbar = barclamp_sdk.connect()              # settings as for ChefConfig.load
>>> crowbar.proposals.create("nova", "default")
>>> crowbar.proposals.commit("nova", "default")
>>> crowbar.machines.transition("d52-54-00-00-00-01.example.com", "ready")

Services: :attr:`Crowbar.machines`, :attr:`Crowbar.proposals`,
:attr:`Crowbar.queue`, :attr:`Crowbar.secrets`, :attr:`Crowbar.locks`,
:attr:`Crowbar.batch`, :attr:`Crowbar.barclamps`, :attr:`Crowbar.audit`; the transport is
:attr:`Crowbar.chef`.

This is the only place that knows how the model's services fit together:
each is built here and handed the collaborators it uses, through its
constructor; no model module knows this facade.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import ChefConfig
from barclamp_sdk.errors import CrowbarError, NotFound, NotFoundError
from barclamp_sdk.model.addresses import NETWORK_BARCLAMP, NETWORK_PROPOSAL, AddressBook
from barclamp_sdk.model.audit import AuditTrail, recording
from barclamp_sdk.model.barclamp import Barclamp
from barclamp_sdk.model.batch import Batch
from barclamp_sdk.model.bmctrust import MachineBMCs
from barclamp_sdk.model.commit import Committer
from barclamp_sdk.model.commit.gate import Gate
from barclamp_sdk.model.commit.rollout import Rollout
from barclamp_sdk.model.dependents import Dependents
from barclamp_sdk.model.element_roles import ElementRoles
from barclamp_sdk.model.hooks import Context, HookServices
from barclamp_sdk.model.spec import ActionResult
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.machines import Machines, record_facts
from barclamp_sdk.model.noderoles import NodeRoleStore
from barclamp_sdk.model.nodes import NodeRunLists
from barclamp_sdk.model.progress import PhaseCallback, reporter
from barclamp_sdk.model.proposals import Proposals
from barclamp_sdk.model.queue import Queue
from barclamp_sdk.model.parts import PartStore
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.registry import BarclampRegistry
from barclamp_sdk.model.runs import RunWatcher
from barclamp_sdk.model.secrets import SecretStore
from barclamp_sdk.model.store import ProposalStore
from barclamp_sdk.model.validation import Validator


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
        run_poll_interval: float = 2.0,
    ) -> None:
        self.chef = chef
        self.concurrency = concurrency
        registry = barclamps if isinstance(barclamps, BarclampRegistry) else BarclampRegistry(barclamps or ())
        self.barclamps = registry
        # A dead commit's lock swept away is noted in its document first (late-bound: built below).
        self.locks = LockManager(chef, owner=owner, lease=lock_lease, timeout=lock_timeout,
                                 on_abandoned=lambda name, item: self.proposals.note_abandoned(name, item))
        if secret is not None:
            self.secrets = SecretStore(chef, self.locks, secret)
        else:
            self.secrets = SecretStore.from_file(chef, self.locks, chef.config.encrypted_data_bag_secret)

        #: Who did what: every operator action is recorded here (one place per operation).
        self.audit = AuditTrail(chef, readers=concurrency)
        store = ProposalStore(chef, registry, self.locks, PartStore(chef, concurrency))
        reader = ClusterReader(chef)
        roles = NodeRoleStore(chef, self.locks, concurrency=concurrency)
        run_lists = NodeRunLists(chef)
        self.elements = ElementRoles(chef)
        bmcs = MachineBMCs(chef, roles, reader)

        def committed_networks() -> dict[str, Any]:
            applied = store.applied(NETWORK_BARCLAMP, NETWORK_PROPOSAL)[0] if NETWORK_BARCLAMP in registry else None
            return dict(applied.attributes.get("networks") or {}) if applied is not None else {}

        #: Server-mastered addresses (the committed network proposal's networks).
        self.addresses = AddressBook(chef, roles, committed_networks, concurrency=concurrency)
        services = HookServices(
            secrets=self.secrets, barclamp=registry.get, installed=registry.__contains__,
            find_proposal=store.find, proposals=store.documents, is_committed=store.is_committed,
            inventory=reader.inventory, machines=reader.view, record_hardware=partial(record_facts, roles),
            applied=lambda barclamp, name: store.applied(barclamp, name)[0], confirmed_bmc=bmcs.get,
            addresses=self.addresses)
        validator = Validator(reader, store, services)
        gate = Gate(store, self.locks, services, reader)
        committer = Committer(chef, store, roles, reader, self.locks, validator, gate, self.elements,
                              run_lists, services, concurrency=concurrency)
        self.queue = Queue(chef, self.locks, store, roles, reader, gate, services)
        rollout = Rollout(committer, store, roles, self.locks, RunWatcher(chef, interval=run_poll_interval))
        self.proposals = Proposals(registry, store, committer, self.queue, gate, reader, self.locks,
                                   self.secrets, validator, services, rollout, record=self.audit.record,
                                   dependents=Dependents(store, services))
        self.machines = Machines(chef, registry, roles, reader, run_lists, store, services, bmcs,
                                 on_ready=lambda names: self.proposals.process_queue(trigger=names),
                                 record=self.audit.record)
        self.batch = Batch(registry, store, self.proposals, reader, services)
        self._services = services

    def context(self, barclamp: str) -> Context:
        """A hook context of ``barclamp`` (what its hooks and actions work through)."""
        return self._services.context(self.barclamps.get(barclamp))

    def run_action(self, barclamp: str, action: str, proposal: str, machines: list[str],
                   progress: Callable[[int], None] | None = None,
                   phases: PhaseCallback | None = None) -> ActionResult:
        """Run a barclamp's :class:`~barclamp_sdk.Action` (``crowbar bios apply ...``), recorded
        in the audit trail (machines, rows, error; never a row's values).

        ``progress`` counts machines done; ``phases`` is called with a
        :class:`~barclamp_sdk.model.progress.Phase` named after the action,
        counting ``n/N`` machines.
        """
        definition = self.barclamps.get(barclamp)
        found = [a for a in definition.actions if a.name == action]
        if not found:
            raise NotFoundError(f"barclamp {barclamp} has no action {action!r}")
        ref = f"{barclamp}/{proposal}"
        with recording(self.audit.record, f"{barclamp} {action}", ref, proposal=ref, machines=machines) as entry:
            counting = reporter(progress, phases)
            counting.phase(action, total=len(machines))
            result = found[0].run(self, proposal, list(machines), counting)
            entry["outcome"] = "failed: " + result.error if result.error else "ok"
            entry["details"].update(rows=len(result.rows), warnings=len(result.warnings))
        return result

    def __repr__(self) -> str:
        return f"Crowbar({self.chef.base_url!r})"

    def install(self, *names: str) -> list[str]:
        """Upload barclamps' element roles (all installed barclamps by default)."""
        return self.elements.install([self.barclamps.get(n) for n in names] if names else self.barclamps.all())

    def role(self, name: str) -> dict[str, Any]:
        """A Chef role by name (for inspection)."""
        try:
            return self.chef.roles.get(name)
        except NotFound:
            raise CrowbarError(f"no role {name!r} on the Chef server") from None


def connect(*, barclamps: Iterable[type[Barclamp]] | None = None, **settings: Any) -> Crowbar:
    """Connect to the Chef server configured as :meth:`ChefConfig.load` finds it."""
    options = {k: settings.pop(k) for k in ("lock_lease", "lock_timeout", "concurrency", "owner",
                                            "run_poll_interval")
               if k in settings}
    return Crowbar(ChefClient(ChefConfig.load(**settings)), barclamps=barclamps, **options)
