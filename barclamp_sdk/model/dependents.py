"""Which committed proposals depend on a proposal, and optional links filled at creation.

A committed proposal depends on the proposals its links name (where they
apply) and on those its barclamp's ``dependencies`` hook returns, as its
applied revision says. ``deactivate`` and ``delete`` of a proposal refuse
while such dependents exist (unless forced), naming them.

Optional links (Crowbar's ``*_instance`` settings, which may hold ``none``)
are filled once, when a proposal is created: with the only committed
proposal of the linked barclamp, if exactly one exists; otherwise (none, or
several to choose from) they stay ``none``. A value given at creation is
kept, and later edits never re-link: ``none`` set by hand stays ``none``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from barclamp_sdk.errors import CrowbarError, ValidationError
from barclamp_sdk.model.hooks import Context, HookServices
from barclamp_sdk.model.jsondoc import get_path, set_path
from barclamp_sdk.model.naming import config_role_name
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.spec import ProposalRef
from barclamp_sdk.model.store import ProposalStore


@dataclass(frozen=True)
class Dependent:
    """A committed proposal that depends on another, and through what (a link's setting, or ``dependencies``)."""

    proposal: ProposalRef
    via: str

    def __str__(self) -> str:
        return f"{self.proposal} ({self.via})"


class Dependents:
    """Finds the committed proposals that depend on a proposal (reads only)."""

    def __init__(self, store: ProposalStore, services: HookServices) -> None:
        self.store = store
        self.services = services

    def of(self, target: ProposalRef) -> list[Dependent]:
        """Committed proposals (other than ``target``) whose applied revision depends on ``target``."""
        roles = set(self.store.chef.roles.list())
        found: list[Dependent] = []
        for current in self.store.documents():
            if current.ref == target or config_role_name(current.barclamp, current.name) not in roles:
                continue
            applied = self.store.applied(current.barclamp, current.name)[0] or current
            found.extend(self._through(applied, current.ref, target))
        return found

    def _through(self, proposal: Proposal, ref: ProposalRef, target: ProposalRef) -> Iterable[Dependent]:
        definition = proposal.definition
        try:
            settings = proposal.settings
        except CrowbarError:
            return []
        vias = [link.setting for link in definition.links
                if link.barclamp == target.barclamp and link.applies(settings)
                and get_path(proposal.attributes, link.setting, "") == target.name]
        try:
            if not vias and target in definition.dependencies(proposal, self.services.context(definition)):
                vias.append("dependencies")
        except CrowbarError:
            pass
        return [Dependent(ref, via) for via in vias]

    def refuse(self, target: ProposalRef, action: str, *, force: bool) -> list[Dependent]:
        """The dependents of ``target``; ValidationError naming them unless ``force``."""
        dependents = self.of(target)
        if dependents and not force:
            names = ", ".join(str(d) for d in dependents)
            raise ValidationError(
                f"cannot {action} {target}: committed proposal(s) depend on it: {names}; "
                f"{'deactivate' if action == 'deactivate' else 'deactivate or relink'} those first, "
                "or give --force (recorded in the audit trail)")
        return dependents


def fill_optional_links(proposal: Proposal, ctx: Context, given: Iterable[str] = ()) -> None:
    """At creation: each optional link that applies, holds ``none`` (or nothing) and was not
    ``given`` gets the only committed proposal of its barclamp, when exactly one exists."""
    given = {key.removeprefix("attributes.") for key in given}
    settings = proposal.settings
    for link in proposal.definition.links:
        if not link.optional or link.setting in given or not link.applies(settings):
            continue
        if get_path(proposal.attributes, link.setting, None) not in (None, "", link.empty):
            continue
        if not ctx.installed(link.barclamp):
            continue
        committed = [p for p in ctx.proposals(link.barclamp) if ctx.is_committed(p)]
        if len(committed) == 1:
            set_path(proposal.attributes, link.setting, committed[0].name)
            proposal.note(f"{link.setting}: linked {link.barclamp}/{committed[0].name} (the only committed one)")
