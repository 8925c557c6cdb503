"""A proposal document, in Crowbar 1.x's shape::

    {
      "id": "bc-nova-default",
      "description": "...",
      "notes": ["controller on d52-...: most memory among non-storage machines", ...],
      "attributes": {"nova": {...settings...}},
      "deployment": {"nova": {
          "crowbar-revision": 3,
          "crowbar-status": "success",              # after a commit (or "failed")
          "elements": {"nova-multi-controller": ["d52-....example.com"], ...},
          "element_order": [["nova-multi-controller"], ["nova-multi-compute-kvm", ...]],
          "element_run_list_order": {"nova-multi-controller": 95, ...},
          "element_states": {"nova-multi-controller": ["readying", "ready", "applying"], ...},
          "config": {"environment": "nova-config-default", "mode": "full",
                     "transitions": false, "transition_list": []}
      }}
    }
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from barclamp_sdk.errors import CrowbarError, ValidationError
from barclamp_sdk.model.naming import config_role_name, proposal_name_of
from barclamp_sdk.model.spec import BarclampSpec, ProposalRef


#: Bookkeeping keys of ``deployment.<barclamp>`` written by commits and the queue, not by editors.
STATUS_KEYS = ("crowbar-status", "crowbar-failed", "crowbar-queued", "crowbar-rollout")


def pydantic_messages(exc: PydanticValidationError, prefix: str) -> list[str]:
    """One line per pydantic error, with the dotted field path."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"])
        where = f"{prefix}.{path}" if path else prefix
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"{where}: {message}")
    return lines


class Proposal:
    """A proposal: settings plus the mapping of machines into elements.

    What ``crowbar.proposals.get/create/set/...`` return, and what a barclamp's
    ``create_proposal`` and ``validate`` hooks are handed. Its members:

    * identity: :attr:`barclamp`, :attr:`name`, :attr:`id` (``bc-<barclamp>-<name>``),
      :attr:`ref`, :attr:`revision`, :attr:`description`, :attr:`config_role`;
    * settings: :attr:`attributes` (JSON, as stored; secrets as references) and
      :attr:`settings` (the barclamp's typed attribute model, a copy: assign it back to change it);
    * machines: :attr:`elements` (element -> machine names), :meth:`nodes`,
      :meth:`elements_of`, :meth:`assign`, :meth:`unassign`, :meth:`move`;
    * review: :attr:`notes` and :meth:`note` (why each choice was made), :attr:`head_status`, :attr:`queued`;
    * the whole document: :attr:`data` (live), :meth:`to_dict` (a copy), :meth:`content`
      (without status bookkeeping), :attr:`deployment`.

    Changing a proposal got from the API changes only this copy: save edits with
    ``crowbar.proposals.update(barclamp, name, mutate)`` (or ``set``/``replace``).
    """

    def __init__(self, barclamp: BarclampSpec, data: dict[str, Any]) -> None:
        self.definition = barclamp
        self.data = data
        #: The token of the proposal lock this document was read under (None: read without it).
        self.read_under: str | None = None
        bc = barclamp.name
        data.setdefault("attributes", {}).setdefault(bc, {})
        deployment = data.setdefault("deployment", {}).setdefault(bc, {})
        deployment.setdefault("elements", {})

    # -- identity -------------------------------------------------------------------

    @property
    def barclamp(self) -> str:
        """The barclamp's name (``nova``)."""
        return self.definition.name

    @property
    def id(self) -> str:
        """The data bag item id: ``bc-<barclamp>-<name>``."""
        return str(self.data["id"])

    @property
    def name(self) -> str:
        """The proposal's name (``default``)."""
        return proposal_name_of(self.barclamp, self.id)

    @property
    def ref(self) -> ProposalRef:
        """``ProposalRef(barclamp, name)``; ``str()`` of it is ``barclamp/name``."""
        return ProposalRef(self.barclamp, self.name)

    @property
    def config_role(self) -> str:
        """The role this proposal becomes when committed."""
        return config_role_name(self.barclamp, self.name)

    def __repr__(self) -> str:
        return f"<Proposal {self.barclamp}/{self.name} r{self.revision}>"

    # -- parts ------------------------------------------------------------------------

    @property
    def attributes(self) -> dict[str, Any]:
        """The settings, as JSON (``attributes.<barclamp>``)."""
        return self.data["attributes"][self.barclamp]  # type: ignore[no-any-return]

    @property
    def deployment(self) -> dict[str, Any]:
        """``deployment.<barclamp>``: elements, order, states, status."""
        return self.data["deployment"][self.barclamp]  # type: ignore[no-any-return]

    @property
    def elements(self) -> dict[str, list[str]]:
        """Element -> machine names."""
        return self.deployment["elements"]  # type: ignore[no-any-return]

    @property
    def revision(self) -> int:
        """The revision saved (1 when created; every saved edit adds one)."""
        return int(self.deployment.get("crowbar-revision", 0))

    @revision.setter
    def revision(self, value: int) -> None:
        self.deployment["crowbar-revision"] = int(value)

    @property
    def description(self) -> str:
        """What the proposal is for (free text)."""
        return str(self.data.get("description", ""))

    @description.setter
    def description(self, text: str) -> None:
        self.data["description"] = text

    @property
    def notes(self) -> list[str]:
        """Why the proposal looks as it does (written by ``create_proposal``)."""
        return self.data.setdefault("notes", [])  # type: ignore[no-any-return]

    def note(self, text: str) -> None:
        """Explain a choice to the reviewer."""
        self.notes.append(text)

    @property
    def settings(self) -> BaseModel:
        """The settings as the barclamp's typed attribute model (a copy)."""
        try:
            return self.definition.Attributes.model_validate(self.attributes)
        except PydanticValidationError as exc:
            raise ValidationError(pydantic_messages(exc, f"attributes.{self.barclamp}"),
                                  subject=f"{self.barclamp}/{self.name}") from None

    @settings.setter
    def settings(self, model: BaseModel) -> None:
        self.data["attributes"][self.barclamp] = model.model_dump(mode="json", by_alias=True)

    @property
    def queued(self) -> bool:
        """Whether the proposal waits in the queue (its ``crowbar-queued`` mark)."""
        return bool(self.deployment.get("crowbar-queued"))

    @queued.setter
    def queued(self, value: bool) -> None:
        if value:
            self.deployment["crowbar-queued"] = True
        else:
            self.deployment.pop("crowbar-queued", None)

    @property
    def head_status(self) -> str:
        """Crowbar's status as the document records it: pending, ready, failed, interrupted or hold."""
        if self.queued:
            return "pending"
        status = self.deployment.get("crowbar-status")
        if status == "success":
            return "ready"
        return str(status) if status else "hold"

    # -- machines ------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """Every machine the proposal uses."""
        return sorted({n for members in self.elements.values() for n in members})

    def elements_of(self, node: str) -> list[str]:
        """The elements ``node`` holds in this proposal, in declaration order."""
        return self.elements_by_node().get(node, [])

    def elements_by_node(self) -> dict[str, list[str]]:
        """Each machine's elements in this proposal, in declaration order (one pass, for many machines)."""
        declared = [e.name for e in self.definition.elements]
        order = sorted(self.elements, key=lambda e: (declared.index(e) if e in declared else len(declared), e))
        held: dict[str, list[str]] = {}
        for element in order:
            for node in dict.fromkeys(self.elements[element]):
                held.setdefault(node, []).append(element)
        return held

    def assign(self, element: str, *nodes: str) -> None:
        """Put machines into an element (idempotent)."""
        self.definition.element(element)
        members = self.elements.setdefault(element, [])
        present = set(members)
        for node in nodes:
            if node not in present:
                members.append(node)
                present.add(node)

    def unassign(self, element: str, *nodes: str) -> None:
        """Take machines out of an element."""
        members = self.elements.get(element, [])
        self.elements[element] = [n for n in members if n not in nodes]

    def move(self, node: str, source: str, target: str) -> None:
        """Move a machine from one element to another."""
        if node not in self.elements.get(source, []):
            raise ValidationError(f"{node} is not in {source} of {self.barclamp}/{self.name}")
        self.unassign(source, node)
        self.assign(target, node)

    # -- copies ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole document (a deep copy), as stored and as ``--json`` prints it."""
        return copy.deepcopy(self.data)

    def copy(self) -> Proposal:
        """An independent copy of this proposal."""
        duplicate = Proposal(self.definition, copy.deepcopy(self.data))
        duplicate.read_under = self.read_under
        return duplicate

    def content(self) -> dict[str, Any]:
        """The reviewable content: the document minus status bookkeeping.

        A view for comparing and diffing: it shares the document's values (no
        copy of a 20,000-machine map), so copy it before changing it.
        """
        deployments = dict(self.data["deployment"])
        deployments[self.barclamp] = {k: v for k, v in deployments[self.barclamp].items()
                                      if not k.startswith("crowbar-")}
        return {**self.data, "deployment": deployments}


def claims_of_others(proposal: Proposal, others: Iterable[Proposal]) -> dict[tuple[str, str], str]:
    """Disks the other proposals claim or plan to claim: (machine, device) -> ``barclamp/name``.

    A proposal whose claims cannot be read (invalid settings) claims nothing.
    """
    taken: dict[tuple[str, str], str] = {}
    for other in others:
        if other.id == proposal.id:
            continue
        try:
            planned = other.definition.claims(other)
        except CrowbarError:
            continue
        for node, devices in planned.items():
            for device in devices:
                taken[(node, device)] = str(other.ref)
    return taken
