"""Barclamps used only by the tests: they exercise the whole lifecycle."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from barclamp_sdk import Attributes, Barclamp, Element, Proposal, ProposalRef, Secret


class Nested(Attributes):
    depth: int = 3
    label: str = "plain"


class WidgetAttributes(Attributes):
    port: int = Field(8080, ge=1, le=65535)
    mode: Literal["fast", "safe"] = "safe"
    password: Secret = None
    depends_on: str = "none"
    disks: dict[str, list[str]] = {}
    nested: Nested = Nested()
    tags: list[str] = []


class Widget(Barclamp):
    name = "widget"
    display_name = "Widget"
    description = "A barclamp for the tests"
    order = 50
    Attributes = WidgetAttributes
    elements = (
        Element("widget-server", recipes=("widget::server",), count=1, priority=50),
        Element("widget-agent", recipes=("widget::agent",), priority=52),
        Element("widget-store", recipes=("widget::store",), conflicts=("gizmo-store",), priority=51),
    )
    element_order = (("widget-server",), ("widget-agent", "widget-store"))

    def create_proposal(self, proposal, inventory, ctx):
        machines = inventory.candidates()
        if not machines:
            proposal.note("no machines yet: assign them later")
            return
        server = max(machines, key=lambda m: (m.memory_bytes, m.name))
        proposal.assign("widget-server", server.name)
        proposal.note(f"server on {server.name}: most memory")
        proposal.assign("widget-agent", *[m.name for m in machines])
        settings = proposal.settings
        for machine in machines:
            if machine.storage_heavy:
                proposal.assign("widget-store", machine.name)
                settings.disks[machine.name] = [d.name for d in machine.free_disks(proposal.ref.key)[:2]]
        settings.password = "generated-" + proposal.name
        proposal.settings = settings

    def claims(self, proposal):
        return proposal.settings.disks

    def dependencies(self, proposal, ctx):
        depends_on = proposal.attributes.get("depends_on", "none")
        return [ProposalRef("gizmo", depends_on)] if depends_on != "none" else []

    def validate(self, proposal, ctx):
        if proposal.attributes.get("mode") == "fast" and proposal.attributes.get("port") == 80:
            yield "mode fast cannot use port 80"


class GizmoAttributes(Attributes):
    after: str = "none"
    size: int = 1


class Gizmo(Barclamp):
    name = "gizmo"
    order = 40
    Attributes = GizmoAttributes
    elements = (
        Element("gizmo-node", recipes=("gizmo::default",)),
        Element("gizmo-store", recipes=("gizmo::store",)),
    )

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("gizmo-node", *[m.name for m in inventory.candidates()[:2]])

    def dependencies(self, proposal, ctx):
        after = proposal.attributes.get("after", "none")
        return [ProposalRef("widget", after)] if after != "none" else []



class Sprocket(Barclamp):
    """One element on every machine: for concurrency tests."""

    name = "sprocket"
    order = 60
    elements = (Element("sprocket-node", recipes=("sprocket::default",), priority=60),)

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("sprocket-node", *[m.name for m in inventory.candidates()])


class Cog(Barclamp):
    name = "cog"
    order = 70
    elements = (Element("cog-node", recipes=("cog::default",), priority=70),)

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("cog-node", *[m.name for m in inventory.candidates()])


TEST_BARCLAMPS = [Widget, Gizmo, Sprocket, Cog]


class Storer(Barclamp):
    """A barclamp whose servers need the storage network (for the network barclamp's tests)."""

    name = "storer"
    Attributes = Attributes
    elements = (Element("storer-server", recipes=("storer::server",)),)
    networks = {"storer-server": ("storage",)}


def widget_proposal(**elements: list[str]) -> Proposal:
    """A widget proposal (template ``default``) with machines in elements (``widget_agent=[...]``)."""
    definition = Widget()
    document = Proposal(definition, definition.template("default"))
    for element, nodes in elements.items():
        document.assign(element.replace("_", "-"), *nodes)
    return document
