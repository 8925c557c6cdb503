"""Waiting for search to catch up with writes (tests that count search-only reads need it)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import CrowbarError


def wait_indexed(chef: ChefClient, index: str, names: Iterable[str], *, timeout: float = 60.0) -> None:
    """Return once search on ``index`` shows every object of ``names`` (CrowbarError after ``timeout``).

    Polls with a growing pause; it waits for a condition, never for a guessed delay.
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        seen = {str(row.get("name")) for row in chef.partial_search(index, "*:*", {"name": ["name"]})}
        missing = wanted - seen
        if not missing:
            return
        if time.monotonic() > deadline:
            raise CrowbarError(f"search on {index} still misses {len(missing)} object(s) after {timeout:.0f}s: "
                               f"{', '.join(sorted(missing)[:3])}")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
