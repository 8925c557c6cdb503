"""Machines: discovery, the pause for allocation, state transitions.

A Chef node (made by chef-client, Ohai data in its automatic attributes)
becomes a Crowbar machine when it is discovered: the library creates its
``crowbar-<node>`` role and adds ``role[crowbar-<node>]`` to the node's run
list. That run-list entry is the only write the library ever makes to a node;
it is re-checked, and repaired with a warning, whenever a commit touches the
machine. Everything else Crowbar knows about a machine lives in its role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.model.audit import Recorder, recording
from barclamp_sdk.model.bmctrust import MachineBMCs
from barclamp_sdk.errors import CrowbarError, NotFoundError, ValidationError
from barclamp_sdk.model.crowbar1x import adopt, is_crowbar1x_role
from barclamp_sdk.model.cluster import ClusterView, MachineRecord, record_from_role
from barclamp_sdk.model.hooks import HookServices
from barclamp_sdk.model.inventory import Inventory, Machine
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.naming import check_node_name, check_role_owner, node_role_name
from barclamp_sdk.model.noderoles import NodeRoleStore, crowbar_data
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.nodes import NodeRunLists
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.registry import BarclampRegistry
from barclamp_sdk.model.selection import MachineFilter, hardware_summary
from barclamp_sdk.model.states import check_state
from barclamp_sdk.model.store import ProposalStore
from barclamp_sdk.model.transitions import TransitionReport, write_states

log = logging.getLogger(__name__)


class Machines:
    """Discover, allocate, transition and inspect machines."""

    def __init__(self, chef: ChefClient, registry: BarclampRegistry, roles: NodeRoleStore, reader: ClusterReader,
                 run_lists: NodeRunLists, store: ProposalStore, services: HookServices, bmc: MachineBMCs, *,
                 on_ready: Callable[[list[str]], Any] | None = None, record: Recorder | None = None) -> None:
        self.chef = chef
        self.registry = registry
        self.roles = roles
        self.reader = reader
        self.run_lists = run_lists
        self.store = store
        self.services = services
        #: Called with the names of machines that reached ``ready`` (the lifecycle processes the queue).
        self.on_ready = on_ready
        #: Confirmed BMC endpoints: the only ones credentials go to.
        self.bmc = bmc
        #: Records operator actions in the audit trail (None: not recorded).
        self.audit = record

    # -- reading ---------------------------------------------------------------------

    def cluster(self) -> ClusterView:
        """A snapshot of every machine's Crowbar record."""
        return self.reader.view()

    def list(self, *, state: str | None = None, element: str | None = None, hardware: str | None = None,
             min_disks: int | None = None, allocated: bool | None = None) -> list[MachineRecord]:
        """Every machine, by name; or those every criterion given chooses (see :class:`MachineFilter`).

        >>> crowbar.machines.list(state="ready", hardware="storage", min_disks=8)
        """
        where = MachineFilter(state, element, hardware, min_disks, allocated)
        return [record for record, _ in self._select(where)]

    def listing(self, *, state: str | None = None, element: str | None = None, hardware: str | None = None,
                min_disks: int | None = None, allocated: bool | None = None) -> list[dict[str, Any]]:
        """What ``crowbar machines list`` shows: :meth:`list`'s records as dicts, ``hardware`` filled in.

        Each is :meth:`MachineRecord.as_dict`, its ``hardware`` the facts of
        :func:`~barclamp_sdk.model.selection.hardware_summary` (profile, product,
        memory, disks ...) with what was recorded about the machine (``bios_set`` ...) over them.
        """
        where = MachineFilter(state, element, hardware, min_disks, allocated)
        rows = []
        for record, facts in self._select(where, facts=True):
            row = record.as_dict()
            row["hardware"] = {**hardware_summary(facts), **record.hardware}
            rows.append(row)
        return rows

    def _select(self, where: MachineFilter, *, facts: bool = False) -> list[tuple[MachineRecord, Machine | None]]:
        view = self.cluster()
        chosen = [r for r in (view.get(n) for n in view.names()) if r is not None and where.matches_record(r)]
        if not (facts or where.needs_facts) or not chosen:
            return [(r, None) for r in chosen]
        inventory = self.reader.inventory([r.name for r in chosen], view=view)
        return [(r, inventory.get(r.name)) for r in chosen
                if not where.needs_facts or where.matches(r, inventory.get(r.name))]

    def record(self, name: str) -> MachineRecord:
        """One machine's Crowbar record, read from its role."""
        check_node_name(name)
        return self.reader.record(name)

    def inventory(self, names: Iterable[str] | None = None) -> Inventory:
        """Typed facts of every machine (or of ``names``), by partial search."""
        return self.reader.inventory(names)

    def state(self, name: str) -> str:
        """A machine's state ("" when it is not a machine yet)."""
        try:
            return self.record(name).state
        except NotFoundError:
            return ""

    def is_allocated(self, name: str) -> bool:
        return self.record(name).allocated

    def show(self, name: str) -> dict[str, Any]:
        """Everything about one machine: facts, Crowbar record, run lists."""
        record = self.record(name)
        facts = self.inventory([name]).get(name)
        role = self.chef.roles.get(record.role)
        node = self.chef.nodes.find(name) or {}
        return {
            "name": name,
            "state": record.state,
            "allocated": record.allocated,
            "role": record.role,
            "run_list": role.get("run_list", []),
            "roles": sorted(record.entries),
            "pending": {k: list(v) for k, v in record.pending.items()},
            "claimed_disks": record.claims,
            "hardware": {**hardware_summary(facts), **record.hardware},  # as `machines list` shows it
            "drifted": record.drifted,
            "node_run_list": node.get("run_list", []),
            "bmc": self.bmc.show(name),
            "facts": facts.model_dump(mode="json") if facts else None,
        }

    # -- discovery -----------------------------------------------------------------------

    def discover(self, names: Iterable[str] | None = None, *,
                 skipped: dict[str, str] | None = None) -> list[str]:
        """Make Chef nodes (all, or ``names``) Crowbar machines; returns the new ones.

        A node that cannot become a machine (a name no role can hold, or whose
        role belongs to another node: see :func:`~barclamp_sdk.naming.check_role_owner`)
        is skipped, its reason put in ``skipped`` (or logged as a warning); every other
        node is still discovered, in name order (so the first claims a shared role name).
        A machine still ``discovering`` (a discovery interrupted after its role was
        created) is discovered again: its run list and the barclamps' hooks (its
        addresses) are finished, idempotently; it is not among the new ones.
        """
        view = self.cluster()
        candidates = sorted(names) if names is not None else sorted(self.chef.nodes.list())
        unfinished = [n for n in candidates if (r := view.get(n)) is not None and r.state == "discovering"]
        current = self.reader.read(unfinished)  # from the roles themselves: a listing may lag
        found = []
        for name in candidates:
            record = current.get(name) if name in unfinished else view.get(name)
            if record is not None and record.state != "discovering":
                continue
            try:
                self.transition(name, "discovering")
            except CrowbarError as exc:  # one odd node never stops the others
                if skipped is None:
                    log.warning("node %r is not discovered: %s", name, exc)
                else:
                    skipped[name] = str(exc)
                continue
            if record is None:
                found.append(name)
        return found

    def check_run_lists(self, names: Iterable[str] | None = None) -> list[str]:
        """Check nodes' run lists hold their crowbar role; repair (warned) if not.

        Checks every machine's node, or ``names``; returns the repaired ones.
        """
        return self.run_lists.check(names if names is not None else self.cluster().names())

    # -- transitions ---------------------------------------------------------------------

    def transition(self, name: str, state: str, *, operator: bool = False) -> MachineRecord:
        """Record that machine ``name`` entered ``state`` (what boot scripts call).

        ``discovering`` makes a Chef node a machine. Barclamp hooks for the
        state run afterwards, in the barclamps' run order; reaching ``ready``
        lets waiting proposals proceed. ``operator=True`` (an operator's
        command, not a boot script) records it in the audit trail.
        """
        if not operator:
            return self._transition(name, state)
        check_node_name(name)
        check_state(state)
        try:
            before: str | None = self.record(name).state
        except NotFoundError:
            before = None
        with recording(self.audit, "transition", name, machines=[name],
                       details={"from": before, "to": state}) as entry:
            record = self._transition(name, state)
            entry["outcome"] = record.state
        return record

    def _transition(self, name: str, state: str) -> MachineRecord:
        check_node_name(name)
        check_state(state)
        created = False
        existing = self.roles.find(name) if state == "discovering" else None
        if existing is not None and record_from_role(existing) is None:
            if is_crowbar1x_role(existing):
                return self._adopt_crowbar1x(name)
            raise ValidationError(f"role {node_role_name(name)} exists but is no machine's role (neither "
                                "barclamp-sdk's nor Crowbar 1.x's shape); rename or delete it, then discover again")
        if existing is not None:
            check_role_owner(name, existing)
        if state == "discovering" and existing is None:
            if self.chef.nodes.find(name) is None:
                raise NotFoundError(
                    f"no Chef node {name!r}: run chef-client on the machine first "
                    "(it creates the node that discovery adopts)"
                )
            _, created = self.roles.create(name, state)
        if state == "discovering":  # also when an interrupted discovery left the role without it
            self.run_lists.add_role(name)
        record = None
        if not created:
            record = self._write_state(name, state)
        if record is None:
            record = self.record(name)
        if self._run_hooks(record, state):
            record = self.record(name)  # a hook may have changed it (say, to problem)
        if state == "ready" and self.on_ready is not None:
            self.on_ready([name])
        return record

    def _adopt_crowbar1x(self, name: str) -> MachineRecord:
        """Take over a Crowbar 1.x role of ``name`` in place (see :mod:`barclamp_sdk.model.crowbar1x`)."""
        notes: list[str] = []

        def change(role: dict[str, Any]) -> bool:
            if not is_crowbar1x_role(role):
                return False
            adopted, found = adopt(role, name)
            role.clear()
            role.update(adopted)
            notes[:] = found
            return True

        report = self.roles.update({name: change}, purpose=f"adopt the Crowbar 1.x role of {name}", adopting=True)
        if report.failed:
            raise report.failed[name]
        for note in notes:
            log.warning("%s: %s", name, note)
        self.run_lists.add_role(name)
        return self.record(name)

    def _write_state(self, name: str, state: str) -> MachineRecord:
        report = write_states(self.roles, {name: state})
        if name in report.failed:
            raise report.failed[name]
        return report.records[name]

    def set_problem(self, name: str, reason: str) -> MachineRecord:
        """Put a machine in ``problem``, recording why (shown by the CLI)."""
        self.record_hardware({}, {name: reason})
        return self.record(name)

    def record_hardware(self, hardware: Mapping[str, Mapping[str, Any]],
                        problems: Mapping[str, str] | None = None) -> None:
        """Merge facts into machines' ``hardware`` record; put ``problems`` (name -> reason) in ``problem``."""
        record_facts(self.roles, hardware, problems)

    def _run_hooks(self, record: MachineRecord, state: str) -> bool:
        """Call the barclamps' transition hooks; True if any ran."""
        return bool(self._run_hooks_many([record.name], state))

    def _run_hooks_many(self, names: list[str], state: str) -> set[str]:
        """Call the barclamps' transition hooks for machines that entered ``state``; those they ran for.

        The machines' facts are read once and each hooked barclamp's committed
        proposals once, whatever the number of machines; a failing hook puts its
        machine in ``problem`` (all such machines in one write).
        """
        hooked = [b for b in self.registry.all()
                  if state in b.transition_states or "all" in b.transition_states]
        if not names:
            return set()
        committed = [(b, proposals) for b in hooked if (proposals := self.store.committed(b.name))]
        if not committed:
            return set()  # no facts read: nothing would use them
        inventory = self.inventory(names)
        present = [n for n in names if inventory.get(n) is not None]
        if not present:
            return set()
        ran: set[str] = set()
        problems: dict[str, str] = {}
        for barclamp, proposals in committed:
            context = self.services.context(barclamp)

            def call(name: str, barclamp: Any = barclamp, context: Any = context, proposals: Any = proposals) -> None:
                for proposal in proposals:
                    try:
                        barclamp.on_transition(context, proposal, inventory.get(name), state)
                    except CrowbarError as exc:
                        log.warning("%s hook for %s entering %s failed: %s", barclamp.name, name, state, exc)
                        problems.setdefault(name, f"{barclamp.name}: {exc}")

            run_parallel(call, [n for n in present if n not in problems], workers=self.reader.concurrency,
                         name="hooks")
            ran.update(present)
        if problems:
            self.record_hardware({}, problems)
        return ran

    def records(self, names: Iterable[str]) -> dict[str, MachineRecord]:
        """The records of the machines among ``names``, each read from its role (never search)."""
        names = sorted(set(names))
        for name in names:
            check_node_name(name)
        return self.reader.read(names).records()

    def transition_many(self, changes: Mapping[str, str], *,
                        progress: Callable[[int], None] | None = None) -> TransitionReport:
        """Move many machines at once (machine -> state), as a boot storm does; what each did.

        The same transitions as :meth:`transition`, for any number of
        machines: one role read and write per machine under one lock per shard
        (:func:`~barclamp_sdk.model.transitions.write_states`), the barclamps'
        hooks called per state with the facts read once, and waiting proposals
        looked at once for all the machines that reached ``ready``. A machine
        that cannot move is reported in ``failed``; the others move.

        >>> crowbar.machines.transition_many({name: "installing" for name in names})
        """
        for name, state in changes.items():
            check_node_name(name)
            check_state(state)
        report = TransitionReport()
        discovering = sorted(n for n, s in changes.items() if s == "discovering")

        def discover(name: str) -> tuple[str, MachineRecord | CrowbarError]:
            try:
                return name, self._transition(name, "discovering")
            except CrowbarError as exc:
                return name, exc

        for name, outcome in run_parallel(discover, discovering, workers=self.reader.concurrency, name="discover"):
            if isinstance(outcome, CrowbarError):
                report.failed[name] = outcome
            else:
                report.records[name] = outcome
        written = write_states(self.roles, {n: s for n, s in changes.items() if s != "discovering"})
        report.failed.update(written.failed)
        by_state: dict[str, list[str]] = {}
        for name, record in sorted(written.records.items()):
            by_state.setdefault(record.state, []).append(name)
        rerun: set[str] = set()
        for state, names in sorted(by_state.items()):
            rerun |= self._run_hooks_many(names, state)
        report.records.update(written.records)
        if rerun:  # a hook may have changed them (say, to problem)
            report.records.update(self.reader.read(rerun).records())
        if progress is not None:
            progress(len(report.records) + len(report.failed))
        ready = sorted(n for n, r in written.records.items() if r.state == "ready")
        if ready and self.on_ready is not None:
            self.on_ready(ready)
        return report

    # -- operator actions ------------------------------------------------------------------

    def unallocated(self) -> list[str]:
        """Machines waiting for allocation (Crowbar's pause after discovery)."""
        return sorted(r.name for r in self.cluster() if not r.allocated)

    def allocate(self, names: Iterable[str], *, progress: Callable[[int], None] | None = None) -> list[str]:
        """Let paused machines proceed past discovery; returns those changed."""
        names = sorted(set(names))
        for name in names:
            check_node_name(name)
        view = self.reader.view(names)
        unknown = [n for n in names if n not in view]
        if unknown:
            raise NotFoundError(f"no machine {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                                + "; see `crowbar machines list`")

        def change(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            if data.get("allocated"):
                return False
            data["allocated"] = True
            return True

        with recording(self.audit, "allocate", ", ".join(names[:3]) + (" ..." if len(names) > 3 else ""),
                       machines=names) as entry:
            report = self.roles.update({n: change for n in names}, purpose="allocate machines", progress=progress)
            entry.update(machines=sorted(report.written), skip=not report.written)
            entry["details"]["allocated"] = len(report.written)
        return sorted(report.written)


def record_facts(roles: NodeRoleStore, hardware: Mapping[str, Mapping[str, Any]],
                 problems: Mapping[str, str] | None = None) -> None:
    """Merge facts into machines' ``hardware`` record; put ``problems`` (name -> reason) in ``problem``.

    One write per machine; the only way the model marks a machine as a problem.
    """
    problems = dict(problems or {})

    def change(name: str) -> Callable[[dict[str, Any]], bool]:
        def mutate(role: dict[str, Any]) -> bool:
            data = crowbar_data(role)
            if name in hardware:
                data.setdefault("hardware", {}).update(hardware[name])
            if name in problems:
                data["state"] = "problem"
                data["state_change_time"] = now_iso()
                data["problem"] = {"reason": problems[name], "at": now_iso()}
            return True
        return mutate

    names = sorted(set(hardware) | set(problems))
    report = roles.update({n: change(n) for n in names}, purpose="record machine facts")
    if report.failed:
        name, error = next(iter(report.failed.items()))
        raise CrowbarError(f"could not record the facts of {name}: {error}")
