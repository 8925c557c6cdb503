"""The Chef roles of barclamps' elements (their recipes) and of committed proposals.

One comparison decides whether a role on the server is current
(:func:`~barclamp_sdk.model.noderoles.comparable_role`), and one upload
writes it, for ``Crowbar.install`` and for commits alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import Conflict, NotFound
from barclamp_sdk.model.noderoles import comparable_role
from barclamp_sdk.model.spec import BarclampSpec


class ElementRoles:
    """Uploads element roles and config roles (create, or update what differs)."""

    def __init__(self, chef: ChefClient) -> None:
        self.chef = chef

    def outdated(self, definition: BarclampSpec, existing: set[str] | None = None) -> list[tuple[dict[str, Any], bool]]:
        """Element roles of ``definition`` missing or different on the server: (role, exists).

        ``existing``: the names of the roles on the server, when the caller
        has listed them (a role not among them is not read).
        """
        stale = []
        for role in definition.element_roles():
            if existing is not None and role["name"] not in existing:
                stale.append((role, False))
                continue
            current = self.chef.roles.find(role["name"])
            if current is None or comparable_role(current) != comparable_role(role):
                stale.append((role, current is not None))
        return stale

    def upload(self, role: dict[str, Any], *, exists: bool | None = None) -> None:
        """Write ``role``: update it, or create it when it does not exist (``exists`` if known)."""
        if exists is False:
            try:
                self.chef.roles.create(role)
                return
            except Conflict:
                pass  # created meanwhile: update it
        try:
            self.chef.roles.update(role["name"], role)
        except NotFound:
            self.chef.roles.create(role)

    def install(self, definitions: Iterable[BarclampSpec]) -> list[str]:
        """Upload every outdated element role of ``definitions``; returns their names."""
        uploaded = []
        for definition in definitions:
            for role, exists in self.outdated(definition):
                self.upload(role, exists=exists)
                uploaded.append(role["name"])
        return uploaded
