"""What a barclamp declares: its attribute model, elements, links, proposal names.

These are plain declarations, used by :class:`~barclamp_sdk.Barclamp`
subclasses and read by the model; nothing here reaches the Chef server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict

from barclamp_sdk.model.inventory import Machine

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

    ``from barclamp_sdk import Link``; a barclamp lists them in ``links``::

        links = (Link("keystone", "keystone_instance", optional=True),
                 Link("ceph", "ceph_instance", when=lambda s: s.volume.volume_type == "rbd"))

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




@dataclass
class ActionResult:
    """What an :class:`Action` did: one row per machine (or item), and an error line if it failed.

    The CLI shows ``rows`` as a table of ``columns`` (or as JSON with
    ``--json``) and exits 1 with ``error`` when it is set.
    """

    rows: list[dict[str, Any]]
    columns: tuple[str, ...] = ()
    error: str | None = None
    #: Printed on stderr (one line each), whatever the output format.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    """A command a barclamp adds under ``crowbar <barclamp> NAME``, as plain data.

    ``run(crowbar, proposal_name, machines, progress)`` does the work through
    the public API and returns an :class:`ActionResult`; the CLI builds the
    command (arguments ``MACHINES...``, option ``--proposal``), its progress
    bar and its output, so a barclamp needs no CLI code of its own.
    """

    name: str
    help: str
    run: Callable[[Any, str, list[str], Callable[[int], None] | None], ActionResult]


class BarclampSpec(Protocol):
    """A barclamp as the model sees it: what :class:`~barclamp_sdk.Barclamp` provides.

    Proposals and hook contexts hold their barclamp through this interface,
    so that the modules below the base class never import it.
    """

    name: ClassVar[str]
    Attributes: ClassVar[type[BaseModel]]
    elements: ClassVar[tuple[Element, ...]]
    links: ClassVar[tuple[Link, ...]]
    ready_states: ClassVar[tuple[str, ...]]
    transition_states: ClassVar[tuple[str, ...]]
    node_attributes: ClassVar[tuple[str, ...]]
    allow_multiple_proposals: ClassVar[bool]

    @property
    def effective_run_order(self) -> int: ...

    @property
    def effective_chef_order(self) -> int: ...

    def element(self, name: str) -> Element: ...

    def batches(self) -> list[list[str]]: ...

    def priority(self, element: Element) -> int: ...

    def template(self, proposal_name: str) -> dict[str, Any]: ...

    def element_roles(self) -> list[dict[str, Any]]: ...

    def claims(self, proposal: Any) -> Mapping[str, Iterable[str]]: ...

    def all_dependencies(self, proposal: Any, ctx: Any) -> list[ProposalRef]: ...

    def create_proposal(self, proposal: Any, inventory: Any, ctx: Any) -> None: ...

    def prepare(self, proposal: Any, ctx: Any) -> None: ...

    def refresh(self, proposal: Any, ctx: Any) -> None: ...

    def validate(self, proposal: Any, ctx: Any) -> Iterable[str]: ...

    def apply_pre(self, ctx: Any, old: Any, new: Any) -> None: ...

    def apply_post(self, ctx: Any, old: Any, new: Any) -> None: ...

    def on_transition(self, ctx: Any, proposal: Any, machine: Machine, state: str) -> None: ...
