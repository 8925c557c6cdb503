"""A whole deployment as one reviewable file, as SUSE's ``crowbar batch`` did.

::

    proposals:
    - barclamp: ceph
      name: default
      description: Ceph for the volumes
      attributes: {pool_size: 3, osd_devices: {...}}
      deployment:
        elements: {ceph-mon: [...], ceph-osd: [...]}
    - barclamp: nova
      attributes: {volume: {volume_type: rbd}}
      commit: true

``export`` writes such a file from the server; ``apply`` creates or updates
each proposal (settings not given keep their defaults), then commits them in
dependency order. Applying the same file twice changes nothing: unchanged
proposals get no new revision, and their commits write nothing. The whole file
is checked (shape, barclamps, names, settings, elements, dependency cycles)
before anything is written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.inputs import load_yaml
from barclamp_sdk.model.commit import CommitResult
from barclamp_sdk.model.hooks import HookServices
from barclamp_sdk.model.jsondoc import deep_merge
from barclamp_sdk.model.naming import check_proposal_name
from barclamp_sdk.model.proposal import Proposal, pydantic_messages
from barclamp_sdk.model.proposals import Proposals
from barclamp_sdk.model.reader import ClusterReader
from barclamp_sdk.model.registry import BarclampRegistry
from barclamp_sdk.model.spec import ProposalRef
from barclamp_sdk.model.store import ProposalStore
from barclamp_sdk.model.validation import (
    check_attributes,
    check_elements,
    check_machines,
    dependencies_among,
    find_cycle,
)


class ScenarioDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    elements: dict[str, list[str]] | None = None


class ScenarioProposal(BaseModel):
    """One proposal of a scenario."""

    model_config = ConfigDict(extra="forbid")

    barclamp: str
    name: str = "default"
    description: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    deployment: ScenarioDeployment = Field(default_factory=ScenarioDeployment)
    commit: bool = True

    @property
    def ref(self) -> ProposalRef:
        return ProposalRef(self.barclamp, self.name)


class Scenario(BaseModel):
    """A scenario file."""

    model_config = ConfigDict(extra="forbid")

    proposals: list[ScenarioProposal]


def parse(text: str, *, source: str = "scenario") -> Scenario:
    """Read a scenario (YAML or JSON); ValidationError names the bad field."""
    data = load_yaml(text, source)  # bounded: size, depth, alias expansion
    if not isinstance(data, dict):
        raise ValidationError(f"{source} must be a mapping with a 'proposals' list")
    try:
        return Scenario.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError(pydantic_messages(exc, source), subject=source) from None


def dump(scenario: dict[str, Any]) -> str:
    """A scenario as YAML text, with a header saying what it is."""
    header = ("# barclamp-sdk scenario: `crowbar batch apply FILE` creates or updates these\n"
              "# proposals and commits those with commit: true, in dependency order.\n")
    return header + yaml.safe_dump(scenario, sort_keys=False, default_flow_style=False)


@dataclass
class BatchReport:
    """What ``apply`` did to each proposal."""

    saved: dict[str, str] = field(default_factory=dict)  # ref -> created | updated | unchanged
    commits: dict[str, CommitResult] = field(default_factory=dict)

    @property
    def queued(self) -> list[str]:
        return [ref for ref, result in self.commits.items() if result.status == "queued"]

    def lines(self) -> list[str]:
        out = []
        for ref, action in self.saved.items():
            result = self.commits.get(ref)
            commit = f", commit {result.status}" if result else ""
            reasons = f" ({'; '.join(result.reasons)})" if result and result.reasons else ""
            out.append(f"{ref}: {action}{commit}{reasons}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {ref: {"saved": action, "commit": self.commits[ref].as_dict() if ref in self.commits else None}
                for ref, action in self.saved.items()}


class Batch:
    """Scenarios against the server: export the proposals, apply a file."""

    def __init__(self, registry: BarclampRegistry, store: ProposalStore, proposals: Proposals,
                 reader: ClusterReader, services: HookServices) -> None:
        self.registry = registry
        self.store = store
        self.proposals = proposals
        self.reader = reader
        self.services = services

    def export(self, barclamps: Iterable[str] = ()) -> dict[str, Any]:
        """The server's proposals (of ``barclamps``, or all) as a scenario."""
        wanted = set(barclamps)
        for name in wanted:
            self.registry.get(name)
        proposals = []
        docs = [p for p in self.store.documents() if not wanted or p.barclamp in wanted]
        for proposal in self._in_dependency_order(docs):
            entry: dict[str, Any] = {"barclamp": proposal.barclamp, "name": proposal.name}
            if proposal.description:
                entry["description"] = proposal.description
            entry["attributes"] = copy.deepcopy(proposal.attributes)
            entry["deployment"] = {"elements": {e: list(m) for e, m in proposal.elements.items() if m}}
            entry["commit"] = self.store.is_committed(proposal)
            proposals.append(entry)
        return {"proposals": proposals}

    def apply(self, scenario: Scenario, *, progress: Callable[[int], None] | None = None) -> BatchReport:
        """Create or update every proposal, then commit them in dependency order."""
        documents = self._check(scenario)
        wants_commit = {str(item.ref): item.commit for item in scenario.proposals}
        report = BatchReport()
        ordered = self._in_dependency_order(list(documents.values()))
        for proposal in ordered:
            report.saved[str(proposal.ref)] = self._save(proposal)
        for proposal in ordered:
            ref = str(proposal.ref)
            if wants_commit[ref]:
                report.commits[ref] = self.proposals.commit(proposal.barclamp, proposal.name, progress=progress)
        return report

    def _document(self, item: ScenarioProposal) -> Proposal:
        """The proposal a scenario entry describes (defaults filled in)."""
        definition = self.registry.get(item.barclamp)
        proposal = Proposal(definition, definition.template(item.name))
        proposal.data["attributes"][item.barclamp] = deep_merge(proposal.attributes, item.attributes)
        if item.description is not None:
            proposal.description = item.description
        if item.deployment.elements is not None:
            for element in item.deployment.elements:
                definition.element(element)
            proposal.elements.clear()
            proposal.elements.update({e.name: list(item.deployment.elements.get(e.name, []))
                                      for e in definition.elements})
        return proposal

    def _check(self, scenario: Scenario) -> dict[str, Proposal]:
        """Everything that can be checked without writing: all errors at once."""
        errors = []
        documents: dict[str, Proposal] = {}
        for index, item in enumerate(scenario.proposals):
            where = f"proposals[{index}] ({item.barclamp}/{item.name})"
            try:
                check_proposal_name(item.name)
                proposal = self._document(item)
            except (ValidationError, NotFoundError) as exc:
                errors.append(f"{where}: {exc}")
                continue
            problems = check_attributes(proposal)
            if problems:
                errors += [f"{where}: {m}" for m in problems]
                continue
            if str(item.ref) in documents:
                errors.append(f"{where}: {item.ref} appears twice")
            documents[str(item.ref)] = proposal
        if errors:
            raise ValidationError(errors, subject="scenario")
        self._in_dependency_order(list(documents.values()))  # refuses cycles
        self._check_against_cluster(documents, {str(item.ref) for item in scenario.proposals if item.commit})
        return documents

    def _check_against_cluster(self, documents: dict[str, Proposal], committed: set[str]) -> None:
        """Every proposal's elements and machines against one snapshot of the cluster, before any write.

        A proposal to commit must be complete (every element's count); one only
        saved may be a draft. These are the checks a save makes that need no
        other proposal (known elements and machines, placement, roles other
        proposals hold, each element's machine checks); a barclamp's own
        ``validate`` and disk claims still run as each proposal is saved, in
        dependency order.
        """
        named = sorted({n for p in documents.values() for n in p.nodes()})
        cluster = self.reader.view(named)
        inventory = self.reader.inventory([n for n in named if n in cluster]) if named else None
        errors = []
        for ref, proposal in documents.items():
            problems = check_elements(proposal, cluster, draft=ref not in committed)
            if inventory is not None:
                problems += check_machines(proposal, inventory)
            errors += [f"{ref}: {problem}" for problem in problems]
        if errors:
            raise ValidationError(errors, subject="scenario (nothing written)")

    def plan(self, scenario: Scenario) -> list[dict[str, Any]]:
        """What :meth:`apply` would do, in order, after checking the whole file; writes nothing."""
        documents = self._check(scenario)
        wants_commit = {str(item.ref): item.commit for item in scenario.proposals}
        steps = []
        for proposal in self._in_dependency_order(list(documents.values())):
            existing = self.store.find(proposal.barclamp, proposal.name)
            if existing is None:
                action = "create"
            else:
                same = (existing.attributes == proposal.attributes and existing.elements == proposal.elements
                        and existing.description == proposal.description)
                action = "unchanged" if same else "update"
            steps.append({"proposal": str(proposal.ref), "save": action, "commit": wants_commit[str(proposal.ref)],
                          "machines": proposal.nodes()})
        return steps

    def _in_dependency_order(self, proposals: list[Proposal]) -> list[Proposal]:
        """Dependencies first; ValidationError naming a cycle if there is one."""
        by_ref = {p.ref: p for p in proposals}
        dependencies = dependencies_among(by_ref, lambda p: self.services.context(p.definition))
        ordered: list[Proposal] = []
        done: set[ProposalRef] = set()

        def visit(proposal: Proposal) -> None:
            if proposal.ref in done:
                return
            done.add(proposal.ref)
            for dep in dependencies(proposal.ref):
                if dep in by_ref:
                    visit(by_ref[dep])
            ordered.append(proposal)

        for proposal in sorted(proposals, key=lambda p: (p.definition.effective_run_order, p.barclamp, p.name)):
            cycle = find_cycle(proposal.ref, dependencies)
            if cycle:
                raise ValidationError(f"dependency cycle: {' -> '.join(cycle)}")
            visit(proposal)
        return ordered

    def _save(self, wanted: Proposal) -> str:
        existing = self.store.find(wanted.barclamp, wanted.name)

        def adopt(proposal: Proposal) -> None:
            proposal.data["attributes"][wanted.barclamp] = copy.deepcopy(wanted.attributes)
            proposal.description = wanted.description
            proposal.elements.clear()
            proposal.elements.update(copy.deepcopy(wanted.elements))

        if existing is None:
            self.proposals.create(wanted.barclamp, wanted.name, from_inventory=False, fill=adopt)
            return "created"
        saved = self.proposals.update(wanted.barclamp, wanted.name, adopt, change="batch apply")
        return "updated" if saved.revision != existing.revision else "unchanged"
