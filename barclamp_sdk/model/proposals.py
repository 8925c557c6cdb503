"""The proposal lifecycle: create, edit, review, commit.

Every edit happens under the proposal's lock, is validated before anything
is written, bumps the revision and is kept in the history. Edits come in
three forms, one way each:

* :meth:`Proposals.update` applies a function to the current document (under
  the lock, so concurrent updates never lose each other);
* :meth:`Proposals.set` sets or unsets dotted keys, typed by the barclamp's
  attribute model (what ``crowbar ... proposal edit --set`` uses);
* :meth:`Proposals.replace` stores a whole document (an editor's, a file's),
  refusing it if the proposal changed since that document was read.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.errors import CrowbarError, NotFoundError, RevisionConflict, ValidationError
from barclamp_sdk.model.audit import Recorder, recording
from barclamp_sdk.model.cluster import ClusterView
from barclamp_sdk.model.commit import CommitResult, Committer
from barclamp_sdk.model.commit.gate import Gate
from barclamp_sdk.model.commit.plan import rollout_plan
from barclamp_sdk.model.commit.rollout import RECORD, Rollout
from barclamp_sdk.model.dependents import Dependents, fill_optional_links
from barclamp_sdk.model.hooks import Context, HookServices
from barclamp_sdk.model.inventory import Inventory
from barclamp_sdk.model.jsondoc import Change, diff, get_path, set_path, unified_diff, unset_path
from barclamp_sdk.model.holders import holder_dead
from barclamp_sdk.model.locks import Lock, LockManager
from barclamp_sdk.model.naming import check_proposal_name, proposal_lock_name, proposal_of_lock, secrets_item_id
from barclamp_sdk.model.placement import drop_platform_refused, on_supported_platforms
from barclamp_sdk.model.progress import PhaseCallback, reporter
from barclamp_sdk.model.proposal import STATUS_KEYS, Proposal
from barclamp_sdk.model.queue import Queue
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.schema import ProposalSchema
from barclamp_sdk.model.registry import BarclampRegistry
from barclamp_sdk.model.secrets import MASK, SecretStore, is_reference, referenced_items, secret_paths
from barclamp_sdk.model.spec import ProposalRef
from barclamp_sdk.model.store import ProposalStore
from barclamp_sdk.model.validation import Validator, parse_setting

log = logging.getLogger(__name__)


@dataclass
class ProposalStatus:
    """Where a proposal stands (Crowbar's statuses, plus ``interrupted``).

    ``ready`` applied; ``pending`` queued; ``failed`` the last commit failed;
    ``unready`` a commit is running; ``hold`` never committed;
    ``interrupted`` a commit stopped half way (commit again to finish).
    ``rollout``: the waves of the last commit in waves (plan, each wave's
    status and failed machines), when there was one.
    """

    proposal: ProposalRef
    status: str
    revision: int
    applied_revision: int | None
    detail: str
    reasons: list[str] = field(default_factory=list)
    rollout: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"proposal": str(self.proposal), "status": self.status, "revision": self.revision,
                "applied_revision": self.applied_revision, "detail": self.detail,
                "reasons": self.reasons, "rollout": self.rollout}


@dataclass
class ProposalDiff:
    """Differences between two versions of a proposal."""

    old_label: str
    new_label: str
    changes: list[Change]
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"old": self.old_label, "new": self.new_label,
                "changes": [c.as_dict() for c in self.changes]}


@dataclass
class RevertResult:
    """What :meth:`Proposals.revert` did: the new revision holding ``reverted_to``'s content,
    its diff against the one that was current, and the commit when asked for."""

    proposal: Proposal
    reverted_to: int
    previous_revision: int
    diff: ProposalDiff | None
    #: Secret settings whose value at ``reverted_to`` is gone, kept at their current value.
    kept_secrets: list[str] = field(default_factory=list)
    commit: CommitResult | None = None

    @property
    def changed(self) -> bool:
        return self.proposal.revision != self.previous_revision

    def as_dict(self) -> dict[str, Any]:
        return {"proposal": str(self.proposal.ref), "revision": self.proposal.revision,
                "reverted_to": self.reverted_to, "previous_revision": self.previous_revision,
                "changed": self.changed, "kept_secrets": self.kept_secrets,
                "diff": self.diff.as_dict() if self.diff else None,
                "commit": self.commit.as_dict() if self.commit else None}


class Proposals:
    """Every barclamp's proposals, and their lifecycle: create, edit, commit or queue, deactivate."""

    def __init__(self, registry: BarclampRegistry, store: ProposalStore, committer: Committer, queue: Queue,
                 gate: Gate, reader: ClusterReader, locks: LockManager, secrets: SecretStore,
                 validator: Validator, services: HookServices, rollout: Rollout | None = None, *,
                 record: Recorder | None = None, dependents: Dependents | None = None) -> None:
        self.registry = registry
        self.rollout = rollout
        self.store = store
        self.committer = committer
        self.queue = queue
        self.gate = gate
        self.reader = reader
        self.locks = locks
        self.secrets = secrets
        self.validator = validator
        self.services = services
        #: Records operations in the audit trail (None: not recorded).
        self.audit = record
        self.dependents = dependents or Dependents(store, services)

    # -- reading --------------------------------------------------------------------------

    def get(self, barclamp: str, name: str) -> Proposal:
        """The current document (NotFoundError says how to create it)."""
        return self.store.get(barclamp, name)

    def list(self, barclamp: str | None = None) -> list[dict[str, Any]]:
        """A summary of each proposal."""
        if barclamp is not None:
            self.registry.get(barclamp)
        return [
            {"barclamp": p.barclamp, "name": p.name, "revision": p.revision,
             "status": p.head_status, "machines": len(p.nodes()), "description": p.description}
            for p in self.store.documents(barclamp)
        ]

    def committed(self, barclamp: str) -> list[Proposal]:
        """Proposals of ``barclamp`` that have been committed."""
        return self.store.committed(barclamp)

    def history(self, barclamp: str, name: str) -> list[dict[str, Any]]:
        """Who saved which revision, when, and what changed."""
        current = self.store.get(barclamp, name)
        return self.store.history(barclamp, name, upto=current.revision)

    def revision(self, barclamp: str, name: str, revision: int) -> Proposal:
        return self.store.revision(barclamp, name, revision)

    def applied(self, barclamp: str, name: str) -> Proposal | None:
        """The revision last committed (recorded in its config role), or None."""
        self.registry.get(barclamp)
        return self.store.applied(barclamp, name)[0]

    def diff(self, barclamp: str, name: str, old: int | None = None, new: int | None = None) -> ProposalDiff:
        """Compare revisions; with none given, what is applied against the current one."""
        current = self.store.get(barclamp, name)
        if old is None:
            before = self.applied(barclamp, name)
            before_doc = _comparable(before) if before else {}
            old_label = (f"applied (r{before.revision})" if before else "not committed")
            if current.deployment.get("crowbar-status") == "interrupted":  # the roles are half way
                old_label += f", partly: {current.deployment.get('crowbar-failed', 'interrupted')}"
        else:
            before_doc = _comparable(self.store.revision(barclamp, name, old))
            old_label = f"r{old}"
        if new is None:
            after_doc, new_label = _comparable(current), f"current (r{current.revision})"
        else:
            after_doc, new_label = _comparable(self.store.revision(barclamp, name, new)), f"r{new}"
        return ProposalDiff(old_label, new_label, diff(before_doc, after_doc),
                            unified_diff(before_doc, after_doc, old_label, new_label))

    def status(self, barclamp: str, name: str) -> ProposalStatus:
        """Where the proposal stands, with the reasons when it waits or failed (and its waves)."""
        status = self._status(barclamp, name)
        record = self.store.get(barclamp, name).deployment.get(RECORD)
        status.rollout = record if isinstance(record, dict) else None
        return status

    def _status(self, barclamp: str, name: str) -> ProposalStatus:
        proposal = self.store.get(barclamp, name)
        ref = proposal.ref
        applied = self.applied(barclamp, name)
        applied_revision = applied.revision if applied else None
        lock = self.locks.inspect(proposal_lock_name(barclamp, name))
        deployment = proposal.deployment
        if lock is not None and str(lock.get("purpose", "")).startswith("commit"):
            progress = lock.get("details") or {}
            where = (f" (wave {progress['wave']} of {progress['waves']})" if "wave" in progress else
                     f" (batch {progress['batch']} of {progress['batches']} done)" if "batch" in progress else "")
            if self.locks.expired(lock) or holder_dead(lock):
                why = ("its lease expired" if self.locks.expired(lock) else
                       "that process is gone: the next command takes its lock over at once")
                return ProposalStatus(ref, "interrupted", proposal.revision, applied_revision,
                                      f"a commit by {lock.get('owner')} stopped{where} ({why}); "
                                      f"commit again to finish it")
            return ProposalStatus(ref, "unready", proposal.revision, applied_revision,
                                  f"being committed by {lock.get('owner')}{where}")
        if proposal.queued or self.queue.contains(ref):
            reasons = self.gate.blockers(proposal, self.reader.view(proposal.nodes())) or [
                "nothing blocks it any more: it will be applied when the queue is next processed"]
            return ProposalStatus(ref, "pending", proposal.revision, applied_revision,
                                  "queued: " + "; ".join(reasons), reasons)
        status = deployment.get("crowbar-status")
        if status in ("failed", "interrupted"):
            why = str(deployment.get("crowbar-failed", ""))
            return ProposalStatus(ref, status, proposal.revision, applied_revision,
                                  why if " again to " in why else why + "; commit again to retry", [why])
        if applied is None:
            return ProposalStatus(ref, "hold", proposal.revision, None, "never committed")
        if applied_revision != proposal.revision:
            return ProposalStatus(ref, "ready", proposal.revision, applied_revision,
                                  f"r{applied_revision} applied; r{proposal.revision} has changes not "
                                  "committed yet (see `proposal diff`)")
        return ProposalStatus(ref, "ready", proposal.revision, applied_revision,
                              f"r{applied_revision} applied")

    # -- writing --------------------------------------------------------------------------

    def create(self, barclamp: str, name: str, *, description: str | None = None,
               settings: Mapping[str, Any] | None = None, from_inventory: bool = True,
               fill: Callable[[Proposal], None] | None = None) -> Proposal:
        """A new proposal from the template and the barclamp's reading of the inventory.

        ``settings`` are the keys :meth:`set` takes, set on the template before
        the barclamp places machines: ``settings={"volume.volume_type": "rbd",
        "elements.nova-multi-controller": ["d52-....example.com"]}``. ``fill``
        edits the document last (``from_inventory=False`` skips the barclamp's
        placement: only ``settings`` and ``fill`` assign machines).
        Raises ValidationError when the proposal exists or a key is unknown.
        """
        definition = self.registry.get(barclamp)
        check_proposal_name(name)
        if self.store.find(barclamp, name) is not None:
            raise ValidationError(f"proposal {barclamp}/{name} already exists; edit it, or delete it first")
        if not definition.allow_multiple_proposals and self.store.documents(barclamp):
            raise ValidationError(f"barclamp {barclamp} allows only one proposal")
        proposal = Proposal(definition, definition.template(name))
        if description is not None:
            proposal.description = description
        for key, value in (settings or {}).items():
            self._set_one(proposal, key, value)
        # One read of the cluster: the barclamp places from it, its hooks and the validation reuse it.
        cluster = self.reader.view() if from_inventory else None
        inventory = self.reader.inventory(view=cluster) if cluster is not None else None
        if inventory is not None:
            usable = on_supported_platforms(proposal, inventory)
            definition.create_proposal(proposal, usable, self.services.context(
                definition, cluster=cluster, inventory=inventory))
            drop_platform_refused(proposal, inventory)
        fill_optional_links(proposal, self.services.context(definition, draft=True, cluster=cluster,
                                                            inventory=inventory), given=settings or ())
        if fill is not None:
            fill(proposal)
        with self.locks.hold(proposal_lock_name(barclamp, name), f"create {barclamp}/{name}"):
            self._check(proposal, cluster=cluster, inventory=inventory)
            machines = f" from an inventory of {len(inventory)} machine(s)" if inventory is not None else ""
            with recording(self.audit, "create", str(proposal.ref), proposal=str(proposal.ref)) as entry:
                with self._staged_secrets(proposal) as staged:
                    created = self.store.create(proposal, change=f"created{machines}")
                entry.update(revision=created.revision, machines=created.nodes())
            if staged:
                self._collect_secrets(created)
            return created

    def update(self, barclamp: str, name: str, mutate: Callable[[Proposal], None], *,
               change: str = "edited", expected_revision: int | None = None) -> Proposal:
        """Apply ``mutate`` to the current document and save it as a new revision.

        The change is first tried on a copy and validated without taking any
        lock, so bad input and no-op edits write nothing at all; under the
        lock the document is read again, and if it changed meanwhile the
        change is applied again to it (and checked again).
        """
        return self._update(barclamp, name, mutate, change=change, expected_revision=expected_revision)

    def _update(self, barclamp: str, name: str, mutate: Callable[[Proposal], None], *, change: str,
                expected_revision: int | None, action: str = "edit",
                details: Mapping[str, Any] | None = None) -> Proposal:
        """:meth:`update`, recorded in the audit trail as ``action`` (with ``details``) when it saves."""
        current = self.store.get(barclamp, name)
        preview = self._edited(current, mutate, expected_revision)
        if preview is None:
            return current
        self._check(preview)
        if _comparable(preview) == _comparable(current):
            return current  # the change normalises to what is stored: no new revision
        with self.locks.hold(proposal_lock_name(barclamp, name), f"edit {barclamp}/{name}") as lock:
            read = current
            current = self.store.get(barclamp, name)
            if current.data == read.data:  # unchanged since the preview: the checked preview is the edit
                edited = preview
                edited.read_under = current.read_under
            else:
                changed = self._edited(current, mutate, expected_revision)
                if changed is None:
                    return current
                self._check(changed)
                edited = changed
            self._note_takeover(lock, edited)
            same_status = all(edited.deployment.get(k) == current.deployment.get(k) for k in STATUS_KEYS)
            if _comparable(edited) == _comparable(current) and same_status:
                return current
            ref = str(current.ref)
            with recording(self.audit, action, ref, proposal=ref, details=dict(details or {})) as entry:
                with self._staged_secrets(edited) as staged:
                    saved = self.store.save(edited, expected_revision=current.revision, change=change)
                entry["details"].update(change=change, from_revision=current.revision,
                                        keys=sorted({c.path for c in diff(_comparable(current), _comparable(saved))}))
                entry.update(revision=saved.revision, machines=sorted(set(current.nodes()) | set(saved.nodes())))
            if staged:
                self._collect_secrets(saved)
            return saved

    def _edited(self, current: Proposal, mutate: Callable[[Proposal], None],
                expected_revision: int | None) -> Proposal | None:
        """``current`` with the change applied; None when nothing changes."""
        if expected_revision is not None and current.revision != expected_revision:
            raise RevisionConflict(
                f"proposal {current.barclamp}/{current.name} changed since you read it (revision "
                f"{expected_revision} -> {current.revision}); re-read it and edit again")
        edited = current.copy()
        mutate(edited)
        for path in secret_paths(current.definition.Attributes):
            value = get_path(edited.attributes, path, None)
            stored = get_path(current.attributes, path, None)
            if isinstance(value, str) and value.startswith(MASK):  # a masked copy came back
                set_path(edited.attributes, path, stored)
            elif isinstance(value, str) and value and is_reference(stored) and self._stored(stored) == value:
                set_path(edited.attributes, path, stored)  # the value it has already: no new version
        for key in STATUS_KEYS:  # bookkeeping is not the editor's
            if key in current.deployment:
                edited.deployment[key] = current.deployment[key]
            else:
                edited.deployment.pop(key, None)
        edited.revision = current.revision
        return None if _comparable(edited) == _comparable(current) else edited

    def _stored(self, ref: dict[str, Any]) -> Any:
        """The plain value of a stored secret (None when it cannot be read)."""
        try:
            return self.secrets.get(ref)
        except CrowbarError:
            return None

    def set(self, barclamp: str, name: str, values: Mapping[str, Any] | None = None,
            unset: Iterable[str] = (), *, expected_revision: int | None = None) -> Proposal:
        """Set (or unset, back to the default) dotted keys; saves one new revision.

        Keys name settings (``volume.volume_type``), ``elements.<element>``
        (a list of machines, or comma-separated text) or ``description``.
        Text values are typed by the attribute model::

            crowbar.proposals.set("ceph", "default", {
                "elements.ceph-osd": ["d52-54-00-00-00-03.example.com", "d52-54-00-00-00-04.example.com"],
                "osd.journal_size": "10240",      # text is typed: an int here
            }, unset=["description"])

        An unknown key is refused (with the closest known one) before anything is written.
        """
        values = dict(values or {})
        unset = list(unset)
        if not values and not unset:
            raise ValidationError("nothing to change: give KEY=VALUE pairs or keys to unset")
        definition = self.registry.get(barclamp)
        probe = Proposal(definition, definition.template(name))
        for key, value in values.items():  # refuse typos before taking any lock
            self._set_one(probe, key, value)
        for key in unset:
            self._unset_one(probe, key, check_only=True)

        def apply(proposal: Proposal) -> None:
            for key, value in values.items():
                self._set_one(proposal, key, value)
            for key in unset:
                self._unset_one(proposal, key)

        summary = ", ".join([*(f"set {k}" for k in values), *(f"unset {k}" for k in unset)])
        before = self.store.get(barclamp, name).revision if self._sets_secret(definition, values) else None
        saved = self.update(barclamp, name, apply, change=summary, expected_revision=expected_revision)
        if before is not None and saved.revision == before:
            self._collect_secrets(saved)  # the value it had already (say, a rerun after a crash): tidy up
        return saved

    @staticmethod
    def _sets_secret(definition: Any, values: Mapping[str, Any]) -> bool:
        paths = set(secret_paths(definition.Attributes))
        return any(key.removeprefix("attributes.") in paths for key in values)

    def replace(self, barclamp: str, name: str, document: Mapping[str, Any], *,
                expected_revision: int | None = None, change: str = "replaced the document",
                source: str = "") -> Proposal:
        """Store a whole edited document (from an editor or a file).

        The document's whole shape is checked first (:mod:`~barclamp_sdk.model.schema`:
        every key, type and allowed value, every problem with its path);
        ``source`` names where it came from in the error.
        """
        definition = self.registry.get(barclamp)
        schema = ProposalSchema(barclamp, tuple(e.name for e in definition.elements), definition.Attributes)
        problems = schema.check(document, name=name)
        if problems:
            raise ValidationError(problems, subject=source or f"{barclamp}/{name}")
        assert isinstance(document, Mapping)
        incoming = Proposal(definition, copy.deepcopy(dict(document)))
        if document.get("id") != incoming.data.get("id") or incoming.name != name:
            raise ValidationError(f"the document's id must stay bc-{barclamp}-{name}")
        if expected_revision is None:
            expected_revision = int((document.get("deployment") or {}).get(barclamp, {}).get("crowbar-revision", 0)) or None

        def adopt(proposal: Proposal) -> None:
            proposal.data.clear()
            proposal.data.update(copy.deepcopy(dict(document)))

        return self.update(barclamp, name, adopt, change=change, expected_revision=expected_revision)

    def revert(self, barclamp: str, name: str, revision: int, *, commit: bool = False,
               keep_current_secrets: bool = False, progress: Callable[[int], None] | None = None,
               phases: PhaseCallback | None = None) -> RevertResult:
        """Save a new revision whose content is ``revision``'s; committing is left to the caller
        (``commit=True`` commits it too).

        Secrets are taken by reference to ``revision``'s versions. A version
        is deleted once neither the document nor the committed role uses it
        (see :mod:`~barclamp_sdk.model.secrets`), so a value replaced and
        committed since is gone: that is refused, naming the settings, unless
        ``keep_current_secrets`` (they keep their current values). Bad input
        (an unknown or the current revision) writes nothing. ``phases`` is
        called with each :class:`~barclamp_sdk.model.progress.Phase` (reading,
        saving, then the commit's).
        """
        counting = reporter(progress, phases)
        counting.phase("reading", f"reading r{revision}")
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise ValidationError(f"revision must be a positive number, not {revision!r}")
        current = self.store.get(barclamp, name)
        ref = current.ref
        if revision == current.revision:
            raise ValidationError(f"r{revision} is the current revision of {ref}: nothing to revert "
                                  f"(see `crowbar {barclamp} proposal history {name}`)")
        if revision > current.revision:
            raise NotFoundError(f"proposal {ref} has no revision {revision} (the current one is "
                                f"r{current.revision}); see `crowbar {barclamp} proposal history {name}`")
        target = self.store.revision(barclamp, name, revision)
        gone = self._gone_secrets(target)
        if gone and not keep_current_secrets:
            raise ValidationError(
                f"cannot revert {ref} to r{revision}: the value(s) of {', '.join(gone)} at r{revision} are "
                "gone (an old secret version is deleted once a later value is committed); give "
                "--keep-current-secrets to revert everything else and keep their current values")

        def adopt(proposal: Proposal) -> None:
            kept = {path: copy.deepcopy(get_path(proposal.attributes, path, None)) for path in gone}
            proposal.data.clear()
            proposal.data.update(copy.deepcopy(target.data))
            for path, value in kept.items():
                set_path(proposal.attributes, path, value)

        counting.phase("saving", f"saving the content of r{revision} as a new revision")
        saved = self._update(barclamp, name, adopt, change=f"reverted to r{revision}",
                             expected_revision=current.revision, action="revert",
                             details={"reverted_to": revision, "kept_current_secrets": gone})
        result = RevertResult(saved, revision, current.revision, None, gone)
        if result.changed:
            result.diff = self.diff(barclamp, name, current.revision, saved.revision)
        if commit:
            result.commit = self.commit(barclamp, name, progress=counting)
        return result

    def _gone_secrets(self, proposal: Proposal) -> list[str]:
        """Secret settings of ``proposal`` whose stored version no longer exists."""
        if not self.secrets.configured:
            return []
        gone = []
        for path in secret_paths(proposal.definition.Attributes):
            value = get_path(proposal.attributes, path, None)
            if is_reference(value) and self.secrets.chef.data_bags.find_item(value["data_bag"], value["item"]) is None:
                gone.append(path)
        return gone

    def delete(self, barclamp: str, name: str, *, force: bool = False) -> None:
        """Delete a proposal that is not committed (deactivate it first).

        Refused while committed proposals depend on it (links, ``dependencies``),
        naming them, unless ``force`` (recorded in the audit trail).
        """
        with self.locks.hold(proposal_lock_name(barclamp, name), f"delete {barclamp}/{name}"):
            proposal = self.store.get(barclamp, name)
            if self.store.is_committed(proposal):
                raise ValidationError(
                    f"proposal {barclamp}/{name} is committed; deactivate it first with "
                    f"`crowbar {barclamp} proposal deactivate {name}`")
            dependents = self.dependents.refuse(proposal.ref, "delete", force=force)
            ref = str(proposal.ref)
            with recording(self.audit, "delete", ref, proposal=ref, revision=proposal.revision,
                           machines=proposal.nodes(), details=_forced(force, dependents)):
                self.queue.remove(proposal.ref)
                if self.secrets.configured:  # before the document: a rerun after a crash finds it and finishes
                    self.secrets.collect(secrets_item_id(barclamp, name), keep=())
                self.store.delete(proposal)

    def deactivate(self, barclamp: str, name: str, *, force: bool = False,
                   phases: PhaseCallback | None = None) -> CommitResult:
        """Take a committed proposal off its machines and delete its config role.

        Refused while other committed proposals depend on it (links,
        ``dependencies``), naming them, unless ``force`` (recorded in the audit trail).
        ``phases`` is called with each :class:`~barclamp_sdk.model.progress.Phase`.
        """
        self.registry.get(barclamp)
        check_proposal_name(name)
        ref = ProposalRef(barclamp, name)
        dependents = self.dependents.refuse(ref, "deactivate", force=force)
        with recording(self.audit, "deactivate", str(ref), proposal=str(ref),
                       details=_forced(force, dependents)) as entry:
            result = self.committer.deactivate(barclamp, name, progress=reporter(None, phases))
            entry.update(revision=result.revision, outcome=result.status)
            entry["details"]["machines_written"] = result.machines_written
        self.queue.remove(result.proposal)
        if result.document is not None:
            self._collect_secrets(result.document)
        return result

    # -- commit or queue ----------------------------------------------------------------------

    def commit(self, barclamp: str, name: str, *, dry_run: bool = False, force: bool = False,
               progress: Callable[[int], None] | None = None, phases: PhaseCallback | None = None,
               wave: int | None = None, max_failures: int | None = None,
               timeout: float | None = None) -> CommitResult:
        """Apply the proposal, or queue it saying why; see :mod:`barclamp_sdk.model.commit`.

        ``wave`` (or the document's ``rollout`` block) commits in waves of
        that many machines, waiting for their chef-client runs, stopping once
        ``max_failures`` failed or timed out (``timeout`` seconds each
        wave): status ``stopped``, recorded; committing again resumes (see
        :mod:`barclamp_sdk.model.commit.rollout`). A commit in waves that
        something blocks is refused, not queued. ``progress`` counts machines
        written; ``phases`` is called with each
        :class:`~barclamp_sdk.model.progress.Phase` (locking, validating,
        writing n/N, waiting for wave k ...).

        Once it is applied, the queue is processed: what waited for it may go.
        """
        counting = reporter(progress, phases)
        if not dry_run:
            self._refresh(barclamp, name)
        document = self.store.get(barclamp, name)
        plan = rollout_plan(document, wave=wave, max_failures=max_failures, timeout=timeout)
        if plan is not None and not dry_run and self.rollout is not None:
            ref = str(ProposalRef(barclamp, name))
            with recording(self.audit, "commit", ref, proposal=ref,
                           details={"force": force, "wave": plan.wave, "max_failures": plan.max_failures}) as entry:
                result = self.rollout.commit(barclamp, name, plan, force=force, progress=counting)
                _commit_entry(entry, result, skip=result.status == "blocked")
                entry["details"]["waves"] = (result.document.deployment.get(RECORD)
                                             if result.document is not None else None)
            if result.status == "blocked":
                raise ValidationError(
                    f"{barclamp}/{name} cannot be rolled out now: {'; '.join(result.reasons)}; nothing of it "
                    "was written (a commit in waves is not queued: commit again once nothing blocks it)")
        else:
            result = self._commit_or_queue(barclamp, name, dry_run=dry_run, force=force, progress=counting,
                                           document=document)
        if result.status == "applied":
            if result.document is not None and referenced_items(result.document.attributes, self.secrets.bag):
                self._collect_secrets(result.document)  # versions only the old config role used
            self.process_queue()
        return result

    def _commit_or_queue(self, barclamp: str, name: str, *, queued: bool = False, dry_run: bool = False,
                         force: bool = False, progress: Callable[[int], None] | None = None,
                         document: Proposal | None = None) -> CommitResult:
        """The one decision point: commit now, or enqueue with the reasons.

        ``document``: read by the caller after its refresh (none is done here then).
        """
        if not dry_run and document is None:
            self._refresh(barclamp, name)
        ref = str(ProposalRef(barclamp, name))
        with recording(self.audit if not dry_run else None, "commit", ref, proposal=ref,
                       details={"from_queue": queued, "force": force}) as entry:
            result = self.committer.commit(barclamp, name, dry_run=dry_run, force=force, queued=queued,
                                           progress=progress, document=document)
            if result.status == "blocked":
                assert result.document is not None
                seconds = result.seconds
                result = self.queue.enqueue(result.document, result.reasons)
                result.seconds = seconds
            elif result.status in ("applied", "unchanged") and (queued or result.was_queued):
                self.queue.remove(result.proposal)
            _commit_entry(entry, result, skip=result.already_queued or result.status == "unchanged")
        return result

    def process_queue(self, *, trigger: str | Iterable[str] | None = None) -> list[CommitResult]:
        """Commit every queued proposal that nothing blocks any more.

        ``trigger`` (a machine that just became ready, or several) limits the
        first pass to items that use one of them or wait on dependencies; once
        anything is applied, every item is looked at again (a dependency may have landed).
        """
        results: list[CommitResult] = []
        triggers = set([trigger] if isinstance(trigger, str) else trigger or ()) - {""}
        items = self.queue.items()
        for _ in range(len(items) + 2):
            applied = False
            for item in items:
                ident = (str(item.get("barclamp")), str(item.get("inst")))
                if triggers and not triggers.intersection(item.get("elements") or {}) and not item.get("deps"):
                    continue
                try:
                    result = self._commit_or_queue(*ident, queued=True)
                except NotFoundError:
                    self.queue.remove(ProposalRef(*ident))  # its proposal was deleted
                    continue
                except CrowbarError as exc:
                    log.warning("queued proposal %s/%s could not be applied: %s", *ident, exc)
                    continue
                results.append(result)
                applied = applied or result.status == "applied"
            if not applied:
                break
            triggers = set()
            items = self.queue.items()
        return results

    def dequeue(self, barclamp: str, name: str) -> None:
        """Take a queued proposal out of the queue."""
        self.registry.get(barclamp)
        check_proposal_name(name)  # bad input: refused before any lock or audit entry
        ref = str(ProposalRef(barclamp, name))
        with recording(self.audit, "dequeue", ref, proposal=ref):
            self.queue.dequeue(barclamp, name)

    def validate(self, proposal: Proposal) -> None:
        """Raise ValidationError listing every problem (writes nothing)."""
        self.validator.validate(proposal)

    # -- helpers --------------------------------------------------------------------------------

    def _refresh(self, barclamp: str, name: str) -> None:
        """The barclamp's ``refresh`` before a commit; a change is saved as a new revision.

        Costs one read of the document, and nothing when the barclamp does not override ``refresh``.
        """
        refresh = getattr(self.registry.get(barclamp), "refresh", None)
        if refresh is None or getattr(refresh, "default", False):
            return

        def mutate(proposal: Proposal) -> None:
            proposal.definition.refresh(proposal, self.services.context(proposal.definition, draft=True))

        self._update(barclamp, name, mutate, change="settings copied from other proposals refreshed",
                     expected_revision=None, action="refresh")

    def _check(self, proposal: Proposal, *, cluster: ClusterView | None = None,
               inventory: Inventory | None = None) -> None:
        """Resolve links, let the barclamp prepare, then validate (reads only).

        ``cluster`` and ``inventory``: whole-cluster snapshots the caller read already.
        """
        ctx = self.services.context(proposal.definition, draft=True, cluster=cluster, inventory=inventory)
        self._resolve_links(proposal, ctx)
        proposal.definition.prepare(proposal, ctx)
        proposal.settings = proposal.settings  # validated by the model, and normalised
        self.validator.validate(proposal, draft=True, cluster=cluster, inventory=inventory, ctx=ctx)

    @staticmethod
    def _resolve_links(proposal: Proposal, ctx: Context) -> None:
        settings = proposal.settings
        for link in proposal.definition.links:
            value = get_path(proposal.attributes, link.setting, "")
            if not link.applies(settings):
                if value not in ("", None, link.empty):
                    set_path(proposal.attributes, link.setting, link.empty)
                continue
            if link.optional and value in (None, "", link.empty):
                continue
            found = ctx.find_proposal(link.barclamp, value or None, purpose=f"{link.setting}")
            if value != found.name:
                set_path(proposal.attributes, link.setting, found.name)
                proposal.note(f"{link.setting}: linked {link.barclamp}/{found.name}")

    @contextlib.contextmanager
    def _staged_secrets(self, proposal: Proposal) -> Iterator[list[str]]:
        """Stage the secrets set in ``proposal`` as a new version and refer to it, for the
        document write in the block; if that write fails, the version is discarded."""
        plain = {}
        for path in secret_paths(proposal.definition.Attributes):
            value = get_path(proposal.attributes, path, None)
            if isinstance(value, str) and value:
                plain[path] = value
        if not plain:
            yield []
            return
        refs = self.secrets.stage(secrets_item_id(proposal.barclamp, proposal.name), plain)
        staged = sorted({ref.item for ref in refs.values()})
        for path, ref in refs.items():
            set_path(proposal.attributes, path, ref.model_dump())
        try:
            yield staged
        except BaseException:
            self.secrets.discard(staged)
            raise

    def _collect_secrets(self, proposal: Proposal) -> None:
        """Delete the proposal's secret versions that neither it nor its config role refers to."""
        if not self.secrets.configured:
            return
        try:
            keep = referenced_items(proposal.data, self.secrets.bag)
            keep |= referenced_items(self.store.config_role(proposal.barclamp, proposal.name) or {},
                                     self.secrets.bag)
            self.secrets.collect(secrets_item_id(proposal.barclamp, proposal.name), keep)
        except CrowbarError as exc:  # the command itself succeeded; the next write collects them
            log.warning("could not collect old secret versions of %s: %s", proposal.ref, exc)

    def _set_one(self, proposal: Proposal, key: str, value: Any) -> None:
        if key == "description":
            proposal.description = str(value)
            return
        if key.startswith("elements."):
            element = key[len("elements."):]
            try:
                proposal.definition.element(element)
            except NotFoundError as exc:
                raise ValidationError(str(exc)) from None
            if isinstance(value, str):
                members = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, list):
                members = [str(v) for v in value]
            else:
                raise ValidationError(f"{key} takes a list of machine names")
            proposal.elements[element] = members
            return
        path = key[len("attributes."):] if key.startswith("attributes.") else key
        parsed = parse_setting(proposal.definition.Attributes, path, value)
        set_path(proposal.attributes, path, parsed)

    def _unset_one(self, proposal: Proposal, key: str, *, check_only: bool = False) -> None:
        path = key[len("attributes."):] if key.startswith("attributes.") else key
        parse_setting(proposal.definition.Attributes, path, None)
        if not check_only:
            unset_path(proposal.attributes, path)

    def _note_takeover(self, lock: Lock, proposal: Proposal) -> None:
        _note_interrupted(lock.details.get("took_over_from") or {}, proposal)

    def note_abandoned(self, lock_name: str, item: dict[str, Any]) -> None:
        """The lock manager's ``on_abandoned``: a dead commit's lock item swept away (``crowbar locks
        sweep``) is noted in its document first, so that committing again finishes the commit."""
        found = proposal_of_lock(lock_name, self.registry.names())
        if found is None or self.store.find(*found) is None:
            return
        self.store.modify(*found, lambda proposal: _note_interrupted(item, proposal),
                          purpose=f"note the interrupted {item.get('purpose', 'commit')}")


def _note_interrupted(previous: dict[str, Any], proposal: Proposal) -> bool:
    """Mark ``proposal`` interrupted when the lock hold ``previous`` (or one it took over) was a commit."""
    for _ in range(10):  # a holder that took over from an interrupted commit and died before noting it
        if not previous or str(previous.get("purpose", "")).startswith("commit"):
            break
        previous = (previous.get("details") or {}).get("took_over_from") or {}
    if not str(previous.get("purpose", "")).startswith("commit"):
        return False
    proposal.deployment["crowbar-status"] = "interrupted"
    proposal.deployment["crowbar-failed"] = f"{previous.get('purpose')} by {previous.get('owner')} was interrupted"
    return True


def _commit_entry(entry: dict[str, Any], result: CommitResult, *, skip: bool) -> None:
    """Fill a commit's audit entry from its result (``skip``: nothing changed, no entry)."""
    entry.update(outcome=result.status, revision=result.revision, skip=skip,
                 machines=result.document.nodes() if result.document is not None else ())
    entry["details"].update(machines_written=result.machines_written, reasons=result.reasons)


def _forced(force: bool, dependents: Iterable[Any]) -> dict[str, Any]:
    """Audit details of a protected operation: forced past which dependents."""
    shown = [str(d) for d in dependents]
    return {"force": True, "forced_past": shown} if force and shown else ({"force": True} if force else {})


def _comparable(proposal: Proposal) -> dict[str, Any]:
    return proposal.content()


def proposal_ref(text: str) -> ProposalRef:
    """``"nova/default"`` -> ProposalRef."""
    barclamp, _, name = text.partition("/")
    if not barclamp or not name:
        raise ValidationError(f"{text!r} is not BARCLAMP/PROPOSAL")
    return ProposalRef(barclamp, name)

