"""goiardi-on-PostgreSQL quirks the client guards against.

**Races answered with 500.** Two POSTs of one new object race for the same
UNIQUE row: the loser gets 409 "already exists" or, when both passed goiardi's
existence check, 500 ``pq: duplicate key value violates unique constraint``;
a GET of a data bag item deleted meanwhile can answer 500 "data bag item X
in B not found". :func:`race_as_client_error` turns them into the
:class:`~barclamp_sdk.errors.Conflict` and
:class:`~barclamp_sdk.errors.NotFound` they mean, so an atomic create (a lock
item) has one winner and clean losers.

**NUL characters.** PostgreSQL's ``jsonb`` and ``text`` cannot hold the NUL character: goiardi on
PostgreSQL answers 500 for a node or data bag item containing ``"\\u0000"``,
and, worse, 200 or 201 for a role while storing nothing (goiardi 0.11's
``Role.Save`` does not check the SQL result). The client therefore refuses
such bodies before sending them, naming the first offending field. The check
costs one substring search of the encoded body; the walk runs only when the
escape is present.
"""

from __future__ import annotations

import re
from typing import Any

from barclamp_sdk.errors import Conflict, HTTPError, NotFound, ServerError, ValidationError

NUL_ESCAPE = b"\\u0000"
UNIQUE_VIOLATION = "duplicate key value violates unique constraint"
NOT_FOUND = re.compile(r"\bnot found$")


def race_as_client_error(exc: ServerError) -> HTTPError | None:
    """The 409 or 404 a goiardi 500 for a lost race stands for (None: another 500)."""
    if exc.messages and all(UNIQUE_VIOLATION in m for m in exc.messages):
        return Conflict(exc.method, exc.path, 409, exc.messages, retried=exc.retried)
    if exc.messages and all(NOT_FOUND.search(m) for m in exc.messages):
        return NotFound(exc.method, exc.path, 404, exc.messages, retried=exc.retried)
    return None


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\0" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\0" in str(key):
                return where
            found = _nul_path(item, where)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found:
                return found
    return None


def check_storable(method: str, path: str, body: Any, data: bytes) -> None:
    """Raise ValidationError when ``body`` (encoded as ``data``) holds a NUL character."""
    if NUL_ESCAPE not in data:
        return
    where = _nul_path(body, "")
    if where is not None:  # the escape may also be a literal backslash followed by u0000
        raise ValidationError(
            f"{where or 'the body'} contains a NUL character (\\u0000), which a PostgreSQL-backed "
            "Chef server cannot store; remove it",
            subject=f"{method} {path}",
        )
