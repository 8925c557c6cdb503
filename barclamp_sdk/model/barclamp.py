"""The :class:`Barclamp` base class: declarations and hooks.

A barclamp is mostly declarations::

    class Widget(Barclamp):
        name = "widget"
        description = "Widgets for everyone"
        order = 90
        Attributes = WidgetAttributes          # pydantic model; defaults = template
        elements = (
            Element("widget-server", recipes=("widget::server",), count=1),
            Element("widget-agent", recipes=("widget::agent",)),
        )
        element_order = (("widget-server",), ("widget-agent",))

        def create_proposal(self, proposal, inventory, ctx):
            first, *rest = inventory.candidates()
            proposal.assign("widget-server", first.name)
            proposal.assign("widget-agent", *[m.name for m in rest])

Installed packages add barclamps through the entry-point group
``barclamp_sdk.barclamps`` (``widget = mypkg.widget:Widget``); see
:mod:`barclamp_sdk.model.registry`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from barclamp_sdk.errors import NotFoundError
from barclamp_sdk.model.hooks import Context
from barclamp_sdk.model.inventory import Inventory, Machine
from barclamp_sdk.model.jsondoc import get_path
from barclamp_sdk.model.naming import config_role_name, proposal_item_id
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.spec import Action, Attributes, Element, Link, ProposalRef

class Barclamp:
    """Base class of every barclamp. Override the declarations and hooks."""

    # -- metadata (crowbar.yml in Crowbar 1.x) --
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1.0"
    requires: ClassVar[tuple[str, ...]] = ()
    member: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1000
    run_order: ClassVar[int | None] = None
    chef_order: ClassVar[int | None] = None
    allow_multiple_proposals: ClassVar[bool] = True

    # -- what it deploys --
    Attributes: ClassVar[type[BaseModel]] = Attributes
    elements: ClassVar[tuple[Element, ...]] = ()
    element_order: ClassVar[tuple[tuple[str, ...], ...] | None] = None
    #: Settings naming other barclamps' proposals (see :class:`Link`).
    links: ClassVar[tuple[Link, ...]] = ()
    #: Machine states whose transitions call :meth:`on_transition`.
    transition_states: ClassVar[tuple[str, ...]] = ()
    #: Settings that map machine names to per-machine data (swift's ``devices``):
    #: committed into each machine's ``crowbar-<node>`` role
    #: (``default_attributes.<barclamp>.<setting>.<node>``), not into the config role.
    node_attributes: ClassVar[tuple[str, ...]] = ()
    #: States a machine must be in for a commit to apply (else it is queued).
    ready_states: ClassVar[tuple[str, ...]] = ("ready",)
    #: Networks the machines of each element need (element -> network names): a commit
    #: allocates them an address on each (see :mod:`barclamp_sdk.model.addresses`).
    networks: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: Commands under ``crowbar <barclamp> ...`` (see :class:`~barclamp_sdk.Action`).
    actions: ClassVar[tuple[Action, ...]] = ()

    # -- derived ---------------------------------------------------------------------

    @property
    def effective_run_order(self) -> int:
        return self.run_order if self.run_order is not None else self.order

    @property
    def effective_chef_order(self) -> int:
        return self.chef_order if self.chef_order is not None else self.order

    @property
    def title(self) -> str:
        return self.display_name or self.name.replace("_", " ").title()

    def element(self, name: str) -> Element:
        """The element called ``name`` (NotFoundError listing the others)."""
        for element in self.elements:
            if element.name == name:
                return element
        raise NotFoundError(
            f"barclamp {self.name} has no element {name!r}; its elements: "
            f"{', '.join(e.name for e in self.elements) or 'none'}"
        )

    def batches(self) -> list[list[str]]:
        """``element_order``: batches of elements, applied in sequence."""
        if self.element_order:
            return [list(batch) for batch in self.element_order]
        return [[e.name for e in self.elements]] if self.elements else []

    def priority(self, element: Element) -> int:
        return element.priority if element.priority is not None else self.effective_chef_order

    def default_attributes(self) -> dict[str, Any]:
        """The attribute template: the model's defaults as JSON."""
        return self.Attributes().model_dump(mode="json", by_alias=True)

    def template(self, proposal_name: str) -> dict[str, Any]:
        """A new proposal document, in Crowbar's shape."""
        return {
            "id": proposal_item_id(self.name, proposal_name),
            "description": self.description,
            "attributes": {self.name: self.default_attributes()},
            "deployment": {
                self.name: {
                    "crowbar-revision": 0,
                    "elements": {e.name: [] for e in self.elements},
                    "element_order": self.batches(),
                    "element_run_list_order": {e.name: self.priority(e) for e in self.elements},
                    "element_states": {e.name: list(e.states) for e in self.elements},
                    "config": {
                        "environment": config_role_name(self.name, proposal_name),
                        "mode": "full",
                        "transitions": bool(self.transition_states),
                        "transition_list": list(self.transition_states),
                    },
                }
            },
        }

    def element_roles(self) -> list[dict[str, Any]]:
        """The Chef roles of the elements (their recipes), to upload."""
        return [
            {
                "name": e.name,
                "json_class": "Chef::Role",
                "chef_type": "role",
                "description": e.description or f"{self.title}: {e.name} (barclamp-sdk element)",
                "run_list": [r if r.startswith(("recipe[", "role[")) else f"recipe[{r}]" for r in e.recipes],
                "default_attributes": dict(e.attributes),
                "override_attributes": {},
                "env_run_lists": {},
            }
            for e in self.elements
        ]

    def linked(self, proposal: Proposal) -> list[ProposalRef]:
        """Proposals named by this proposal's links (where they apply)."""
        settings = proposal.settings
        refs = []
        for link in self.links:
            value = get_path(proposal.attributes, link.setting, "")
            if link.applies(settings) and value not in ("", None, link.empty):
                refs.append(ProposalRef(link.barclamp, str(value)))
        return refs

    def all_dependencies(self, proposal: Proposal, ctx: Context) -> list[ProposalRef]:
        """Linked proposals plus :meth:`dependencies`, without repeats."""
        refs = self.linked(proposal)
        for ref in self.dependencies(proposal, ctx):
            if ref not in refs:
                refs.append(ref)
        return refs

    def info(self) -> dict[str, Any]:
        """Metadata as a dict (for listings)."""
        return {
            "name": self.name, "display_name": self.title, "description": self.description,
            "version": self.version, "requires": list(self.requires), "member": list(self.member),
            "order": self.order, "run_order": self.effective_run_order,
            "chef_order": self.effective_chef_order,
            "elements": [e.name for e in self.elements],
            "element_order": self.batches(),
            "transitions": list(self.transition_states),
        }

    # -- hooks (override) ------------------------------------------------------------

    def create_proposal(self, proposal: Proposal, inventory: Inventory, ctx: Context) -> None:
        """Fill a new proposal from the inventory (elements, attributes, notes)."""

    def prepare(self, proposal: Proposal, ctx: Context) -> None:
        """Adjust a proposal before each save is validated (derived settings, links)."""

    def refresh(self, proposal: Proposal, ctx: Context) -> None:
        """Before each commit: recompute settings copied from other proposals.

        A change is saved as a new revision (then committed), so such copies
        follow the proposals they come from even when those were edited later.
        """

    refresh.default = True  # type: ignore[attr-defined]  # not overridden: a commit skips the extra read

    def validate(self, proposal: Proposal, ctx: Context) -> Iterable[str]:
        """Extra checks; yield one message per problem (nothing is written).

        ``ctx.draft`` is true while saving: only a commit needs everything.
        """
        return ()

    def dependencies(self, proposal: Proposal, ctx: Context) -> Iterable[ProposalRef]:
        """Proposals that must be applied before this one."""
        return ()

    def claims(self, proposal: Proposal) -> Mapping[str, Iterable[str]]:
        """Disks this proposal takes: machine -> device names (one owner per disk)."""
        return {}

    def apply_pre(self, ctx: Context, old: Proposal | None, new: Proposal) -> None:
        """Called in a commit before any role is written."""

    def apply_post(self, ctx: Context, old: Proposal | None, new: Proposal) -> None:
        """Called in a commit after every role is written."""

    def on_transition(self, ctx: Context, proposal: Proposal, machine: Machine, state: str) -> None:
        """A machine entered one of :attr:`transition_states` (per committed proposal)."""



