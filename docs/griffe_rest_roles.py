"""A griffe extension for the API reference: reST roles in docstrings as inline code.

The docstrings cross-reference with Sphinx roles (``:class:`~barclamp_sdk.Crowbar```);
Markdown would show the role literally. Each becomes inline code of the name as
Sphinx would show it (``~`` keeps the last part only).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """``:meth:`~a.B.c``` -> ```c```; ``:class:`a.B``` -> ```a.B```."""
    def shown(match: re.Match[str]) -> str:
        target = match.group(2).strip()
        label = target.rsplit(".", 1)[-1] if match.group(1) else target
        return f"`{label}`"
    return ROLE.sub(shown, text)


class RestRoles(griffe.Extension):
    """Rewrite reST roles in every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
