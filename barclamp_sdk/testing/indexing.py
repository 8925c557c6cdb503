"""Waiting for search to catch up with writes (tests that count search-only reads need it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import CrowbarError


def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = 60.0) -> None:
    """Return once ``condition()`` is true (CrowbarError naming ``what`` after ``timeout``).

    Polls with a growing pause; it waits for a condition, never for a guessed delay.
    """
    deadline = time.monotonic() + timeout
    pause = 0.05
    while not condition():
        if time.monotonic() > deadline:
            raise CrowbarError(f"{what} after {timeout:.0f}s")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def wait_indexed(chef: ChefClient, index: str, names: Iterable[str], *,
                 where: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 60.0) -> None:
    """Return once search on ``index`` shows every object of ``names`` (CrowbarError after ``timeout``).

    With ``where``, each object's row (the whole object search returns) must
    also pass it: search may still show an older version of an object it
    already lists.
    """
    wanted = set(names)

    def all_seen() -> bool:
        if where is None:
            seen = {str(row.get("name")) for row in chef.partial_search(index, "*:*", {"name": ["name"]})}
        else:
            seen = {str(row.get("name", row.get("id"))) for row in chef.search(index, "*:*") if where(row)}
        return wanted <= seen

    wait_until(all_seen, f"search on {index} does not show all of {len(wanted)} object(s)"
               + (" as wanted" if where else ""), timeout=timeout)
