"""The :class:`Barclamp` base class, its elements, and the registry.

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
``barclamp_sdk.barclamps`` (``widget = mypkg.widget:Widget``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from barclamp_sdk.errors import ConfigurationError, NotFoundError
from barclamp_sdk.naming import check_barclamp_name, config_role_name, proposal_item_id
from barclamp_sdk.states import STATES

if TYPE_CHECKING:
    from barclamp_sdk.context import Context
    from barclamp_sdk.inventory import Inventory, Machine
    from barclamp_sdk.proposals import Proposal

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "barclamp_sdk.barclamps"
#: Extra barclamps to load, not installed as packages: ``module:Class,...``.
EXTRA_ENV = "CROWBAR_BARCLAMPS"

#: Crowbar's usual element states: on the run list once the OS is up.
DEFAULT_ELEMENT_STATES = ("readying", "ready", "applying")


class Attributes(BaseModel):
    """Base for barclamp attribute models: unknown keys are errors.

    Every field needs a default: the defaults are the proposal template.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ProposalRef(NamedTuple):
    """A proposal named by barclamp and name (``nova/default``)."""

    barclamp: str
    name: str

    def __str__(self) -> str:
        return f"{self.barclamp}/{self.name}"

    @property
    def key(self) -> str:
        """The key used in node roles: ``<barclamp>-<name>``."""
        return f"{self.barclamp}-{self.name}"


@dataclass(frozen=True)
class Link:
    """A setting that names another barclamp's proposal.

    When the link applies (``when(settings)``, default always) and the
    setting is empty, the committed proposal of ``barclamp`` (or the only
    one) is found and recorded there; a named one must exist. A linked
    proposal is a commit dependency. ``optional`` links may hold ``none``
    (no dependency), as Crowbar's ``*_instance`` settings did; a link that
    does not apply is reset to the empty value.
    """

    barclamp: str
    setting: str
    when: Callable[[Any], bool] | None = None
    optional: bool = False

    @property
    def empty(self) -> str:
        return "none" if self.optional else ""

    def applies(self, settings: Any) -> bool:
        return self.when is None or bool(self.when(settings))


@dataclass(frozen=True)
class Element:
    """A Chef role a barclamp assigns to machines, with placement rules.

    ``count`` exactly that many machines; ``min``/``max`` bounds; ``odd`` an odd
    number (quorum); ``unique`` its machines hold no other element of the
    barclamp; ``conflicts`` element names (of any barclamp) that may not share
    a machine with it; ``accepts`` a check of each machine's facts, returning
    why it cannot hold the element (or None). ``states`` are the machine
    states in which the role is on the run list (Crowbar's ``element_states``).
    ``platform`` / ``exclude_platform`` are Crowbar's element constraints:
    platform, family or OS name -> version spec (``{"linux": "/.*/"}``,
    ``{"suse": ">= 12.2"}``); ``platform=None`` allows every platform.
    """

    name: str
    recipes: tuple[str, ...] = ()
    priority: int | None = None
    states: tuple[str, ...] = DEFAULT_ELEMENT_STATES
    count: int | None = None
    min: int = 0
    max: int | None = None
    odd: bool = False
    unique: bool = False
    conflicts: tuple[str, ...] = ()
    description: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    accepts: Callable[[Machine], str | None] | None = None
    platform: Mapping[str, str] | None = None
    exclude_platform: Mapping[str, str] = field(default_factory=dict)

    def refuses(self, machine: Machine) -> str | None:
        """Why ``machine`` cannot hold this element (platform, then ``accepts``), or None."""
        reason = machine.platform_refusal(self.platform, self.exclude_platform)
        if reason is None and self.accepts is not None:
            reason = self.accepts(machine)
        return reason

    @property
    def checks_machines(self) -> bool:
        return self.accepts is not None or self.platform is not None or bool(self.exclude_platform)

    def check_count(self, count: int, *, draft: bool = False) -> str | None:
        """Why ``count`` machines break this element's rules, or None.

        A ``draft`` (a proposal being saved, not committed) may have too few
        machines yet; too many is always wrong.
        """
        if self.count is not None and (count > self.count or (count < self.count and not draft)):
            return f"{self.name} needs exactly {self.count} machine(s), has {count}"
        if count < self.min and not draft:
            return f"{self.name} needs at least {self.min} machine(s), has {count}"
        if self.max is not None and count > self.max:
            return f"{self.name} allows at most {self.max} machine(s), has {count}"
        if self.odd and count % 2 == 0 and (count or not draft):
            return f"{self.name} needs an odd number of machines (for quorum), has {count}"
        return None


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
    #: States a machine must be in for a commit to apply (else it is queued).
    ready_states: ClassVar[tuple[str, ...]] = ("ready",)

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
        from barclamp_sdk.jsondoc import get_path

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

    def cli_commands(self) -> list[Any]:
        """Extra ``click`` commands for ``crowbar <barclamp> ...`` (thin shells over an API)."""
        return []


def check_barclamp_class(cls: type[Barclamp]) -> None:
    """Refuse a barclamp whose declarations do not hold together."""
    where = f"barclamp class {cls.__module__}.{cls.__qualname__}"
    try:
        check_barclamp_name(cls.name)
    except Exception as exc:  # noqa: BLE001 - reworded for authors
        raise ConfigurationError(f"{where}: {exc}") from None
    names = [e.name for e in cls.elements]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}: element names repeat: {names}")
    instance = cls()
    ordered = [n for batch in instance.batches() for n in batch]
    unknown = sorted(set(ordered) - set(names))
    if unknown:
        raise ConfigurationError(f"{where}: element_order names unknown elements {unknown}")
    missing = sorted(set(names) - set(ordered))
    if missing:
        raise ConfigurationError(f"{where}: element_order leaves out {missing}")
    for state in (*cls.transition_states, *cls.ready_states):
        if state not in STATES:
            raise ConfigurationError(f"{where}: unknown state {state!r} in transition_states/ready_states")
    for element in cls.elements:
        for state in element.states:
            if state != "all" and state not in STATES:
                raise ConfigurationError(f"{where}: element {element.name} has unknown state {state!r}")
    if not (isinstance(cls.Attributes, type) and issubclass(cls.Attributes, BaseModel)):
        raise ConfigurationError(f"{where}: Attributes must be a pydantic model")
    try:
        cls.Attributes()
    except PydanticValidationError as exc:
        raise ConfigurationError(
            f"{where}: every attribute needs a default (the template); {exc.errors()[0]['loc']} has none"
        ) from None


class BarclampRegistry:
    """The barclamps available: installed entry points plus registered classes."""

    def __init__(self, classes: Iterable[type[Barclamp]] = (), *, entry_points_group: str | None = ENTRY_POINT_GROUP) -> None:
        self._classes: dict[str, type[Barclamp]] = {}
        self._instances: dict[str, Barclamp] = {}
        self.load_errors: dict[str, str] = {}
        if entry_points_group:
            self._load_entry_points(entry_points_group)
            self._load_from_environment()
        for cls in classes:
            self.register(cls)

    def _load_entry_points(self, group: str) -> None:
        for point in entry_points(group=group):
            try:
                cls = point.load()
                self.register(cls)
            except Exception as exc:  # noqa: BLE001 - one broken package must not stop the rest
                self.load_errors[point.name] = f"{type(exc).__name__}: {exc}"
                log.warning("barclamp %s (%s) could not be loaded: %s", point.name, point.value, exc)

    def _load_from_environment(self) -> None:
        for spec in filter(None, (s.strip() for s in os.environ.get(EXTRA_ENV, "").split(","))):
            module_name, _, class_name = spec.partition(":")
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
                self.register(cls)
            except Exception as exc:  # noqa: BLE001 - reported, the rest still load
                self.load_errors[spec] = f"{type(exc).__name__}: {exc}"
                log.warning("barclamp %s from %s could not be loaded: %s", spec, EXTRA_ENV, exc)

    def register(self, cls: type[Barclamp]) -> type[Barclamp]:
        """Add a barclamp class (usable as a class decorator)."""
        check_barclamp_class(cls)
        self._classes[cls.name] = cls
        self._instances.pop(cls.name, None)
        return cls

    def get(self, name: str) -> Barclamp:
        """The barclamp called ``name`` (NotFoundError listing the known ones)."""
        if name not in self._classes:
            known = ", ".join(sorted(self._classes)) or "none installed"
            raise NotFoundError(f"unknown barclamp {name!r}; available: {known}")
        if name not in self._instances:
            self._instances[name] = self._classes[name]()
        return self._instances[name]

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def all(self) -> list[Barclamp]:
        """Every barclamp, in run order."""
        return sorted((self.get(n) for n in self._classes), key=lambda b: (b.effective_run_order, b.name))
