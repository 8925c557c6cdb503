"""Run-list expansion through nested roles, as chef-client does it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import NotFound, ValidationError

MAX_DEPTH = 20


@dataclass
class Expansion:
    """Roles (in the order Chef applies them), recipes, and the role objects."""

    roles: list[str] = field(default_factory=list)
    recipes: list[str] = field(default_factory=list)
    applied: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def expand(chef: ChefClient, run_list: Iterable[str], *,
           cache: dict[str, dict[str, Any] | None] | None = None, strict: bool = True) -> Expansion:
    """Expand ``run_list``; a missing role is an error when ``strict``."""
    cache = {} if cache is None else cache
    result = Expansion()

    def visit(items: Iterable[str], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValidationError(f"roles nest deeper than {MAX_DEPTH} levels (a loop?)")
        for item in items:
            if item.startswith("role[") and item.endswith("]"):
                name = item[5:-1]
                if name in result.roles or name in result.missing:
                    continue
                if name not in cache:
                    cache[name] = chef.roles.find(name)
                role = cache[name]
                if role is None:
                    if strict:
                        raise NotFound("GET", f"/roles/{name}", 404,
                                       [f"the run list names role {name}, which does not exist"])
                    result.missing.append(name)
                    continue
                result.roles.append(name)
                result.applied.append(role)
                visit(role.get("run_list") or [], depth + 1)
            else:
                recipe = item[7:-1] if item.startswith("recipe[") and item.endswith("]") else item
                if recipe not in result.recipes:
                    result.recipes.append(recipe)

    visit(run_list, 0)
    return result
