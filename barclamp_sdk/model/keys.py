"""The keys :meth:`Proposals.set <barclamp_sdk.model.proposals.Proposals.set>` accepts, for a barclamp.

Pure (read from the barclamp's declarations, never the server): what shell
completion offers after ``--set`` and ``--unset``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from barclamp_sdk.model.barclamp import Barclamp


def setting_keys(barclamp: Barclamp) -> list[str]:
    """``description``, ``elements.<element>`` and the dotted path of every setting, sorted.

    A setting whose default is a non-empty mapping is named by its leaves
    (``volume.volume_type``); an empty mapping (``osd_devices``) by itself.
    """
    keys = {"description", *(f"elements.{e.name}" for e in barclamp.elements)}
    keys.update(_leaves(barclamp.default_attributes(), ""))
    return sorted(keys)


def _leaves(value: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            yield from _leaves(item, f"{path}.")
        else:
            yield path
