"""The library's errors, all in one place.

Every error the library raises derives from :class:`CrowbarError`, so a
script can catch that one class. Each message is a single line that says what
went wrong and, where there is one, what to do about it; the CLI prints it as
is.

Transport errors (talking to the Chef server)::

    CrowbarError
    └── ChefError
        ├── ConnectionFailed          the server could not be reached
        ├── InvalidResponse           an answer that is not what the API promises
        └── HTTPError                 the server answered with an error status
            ├── BadRequest            400
            ├── Unauthorized          401 (wrong key, unknown client, clock skew)
            ├── Forbidden             403
            │   └── LicenseInvalid    403 invalid-license (unlicensed Chef Infra Server)
            ├── NotFound              404
            ├── UnsupportedAPIVersion 406 (X-Ops-Server-API-Version out of range)
            ├── Conflict              409
            ├── RequestTooLarge       413, or refused before sending (over max_request_size)
            └── ServerError           5xx

Model errors (what the library refuses to do)::

    CrowbarError
    ├── ConfigurationError            settings missing or unsafe
    ├── ValidationError               bad input; nothing was written
    │   └── InvalidTransition         a machine cannot go to that state
    ├── NotFoundError                 no such machine, proposal, barclamp ...
    ├── ConcurrencyError              someone else changed it / holds it
    │   ├── LockTimeout
    │   └── RevisionConflict
    ├── DriftError                    a role was edited by hand since we wrote it
    └── BMCError                      a BMC could not be reached or refused
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class CrowbarError(Exception):
    """Base class of every error raised by barclamp-sdk."""

    #: Process exit status the CLI uses for this error.
    exit_code: int = 1


class ConfigurationError(CrowbarError):
    """Configuration is missing, contradictory or unsafe."""


class ValidationError(CrowbarError):
    """Input was refused before anything was written.

    ``errors`` lists every problem found (field path and message), so a caller
    can show them all at once; ``str()`` gives the first, plus a count.
    """

    def __init__(self, errors: list[str] | str, *, subject: str = "") -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.subject = subject
        first = self.errors[0] if self.errors else "invalid input"
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        prefix = f"{subject}: " if subject else ""
        super().__init__(f"{prefix}{first}{more}")


class InvalidTransition(ValidationError):
    """A machine cannot go from its state to the one asked for."""


class NotFoundError(CrowbarError):
    """A machine, proposal, barclamp or other named thing does not exist."""


class ConcurrencyError(CrowbarError):
    """Another process holds or changed what we wanted to change."""


class LockTimeout(ConcurrencyError):
    """A lock could not be acquired in time; the message names its holder."""


class RevisionConflict(ConcurrencyError):
    """The object changed since it was read; re-read and try again."""


class Interrupted(CrowbarError):
    """SIGINT or SIGTERM stopped a command at a write boundary; running it again finishes the job."""

    exit_code = 130

    def __init__(self, message: str, *, signal: str = "SIGINT") -> None:
        super().__init__(message)
        self.signal = signal


class DriftError(CrowbarError):
    """A role we manage was changed by hand since we last wrote it."""


class BMCError(CrowbarError):
    """A baseboard management controller could not be used."""


# --------------------------------------------------------------------------
# Transport


class ChefError(CrowbarError):
    """Talking to the Chef server failed."""


class ConnectionFailed(ChefError):
    """The Chef server could not be reached (refused, reset, timed out)."""


class InvalidResponse(ChefError):
    """The server's answer is not what the Chef API promises."""


class HTTPError(ChefError):
    """The Chef server answered with an error status.

    Carries the request's ``method`` and ``path``, the ``status`` and the
    server's own messages (Chef puts them in ``{"error": [...]}``).
    ``retried`` is true when an earlier attempt of the same request may have
    reached the server (used to make retried creates and deletes safe).
    """

    hint: str = ""

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        messages: list[str],
        *,
        retried: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.messages = messages
        self.retried = retried
        text = "; ".join(messages) if messages else "no message from server"
        hint = f" ({self.hint})" if self.hint else ""
        super().__init__(f"{method} {path} failed with HTTP {status}: {text}{hint}")


class BadRequest(HTTPError):
    """400: the server refused the request's content."""


class Unauthorized(HTTPError):
    """401: the signature was refused."""

    hint = (
        "check that the client name exists on the server, that the key file "
        "belongs to that client, and that this machine's clock is right "
        "(Chef servers refuse requests more than 15 minutes off)"
    )


class Forbidden(HTTPError):
    """403: the client is not allowed to do this."""

    hint = "the client lacks permission; use an admin client for this operation"


class LicenseInvalid(Forbidden):
    """403 ``invalid-license``: an unlicensed Chef Infra Server refuses every call."""

    hint = ("the Chef server has no valid licence and refuses every request; install one "
            "(chef-server-ctl license) or use Cinc Server")


class UnsupportedAPIVersion(HTTPError):
    """406: the server does not speak the X-Ops-Server-API-Version we sent."""


class RequestTooLarge(HTTPError):
    """413, or refused before sending: a request body over the server's size limit."""

    hint = ("store less in one object, or, if the server allows more (erchef's "
            "max_request_size, goiardi -j), raise ChefConfig.max_request_size")

    @classmethod
    def before_sending(cls, method: str, path: str, subject: str, size: int, limit: int) -> RequestTooLarge:
        """The error for a body refused here, before it was sent."""
        error = cls(method, path, 413, [])
        error.args = (f"{method} {path}: {subject} is {size:,} bytes of JSON, over the Chef "
                      f"server's limit of {limit:,} bytes; nothing was sent ({cls.hint})",)
        return error


class NotFound(HTTPError, NotFoundError):
    """404: no such object on the server."""


class Conflict(HTTPError, ConcurrencyError):
    """409: the object already exists."""


class ServerError(HTTPError):
    """5xx: the server failed (after retries where they apply)."""


_BY_STATUS: dict[int, type[HTTPError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


class _Response(Protocol):
    status_code: int
    content: bytes

    def json(self) -> Any: ...


def server_messages(response: _Response) -> list[str]:
    """Extract the server's error messages from a Chef error body."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        text = response.content.decode("utf-8", "replace").strip()
        return [text[:300]] if text else []
    if isinstance(body, dict):
        error = body.get("error", body.get("message"))
        if isinstance(error, list):
            return [str(e) for e in error]
        if error is not None:
            return [str(error)]
    return [json.dumps(body)[:300]]


def raise_for_response(
    method: str, path: str, response: _Response, *, retried: bool = False
) -> None:
    """Raise the right :class:`HTTPError` subclass for an error response."""
    status = response.status_code
    if status < 400:
        return
    messages = server_messages(response)
    if status >= 500:
        cls: type[HTTPError] = ServerError
    elif status == 403 and "invalid-license" in _body_text(response):
        cls = LicenseInvalid
    elif status == 406:
        body = _json_body(response)
        if isinstance(body, dict) and "min_version" in body:
            messages = [f"the server speaks X-Ops-Server-API-Version {body.get('min_version')}-"
                        f"{body.get('max_version')} ({body.get('message', 'version not supported')}); "
                        "set ChefConfig.server_api_version inside that range"]
        cls = UnsupportedAPIVersion
    elif status == 413:
        cls = RequestTooLarge
    else:
        cls = _BY_STATUS.get(status, HTTPError)
    raise cls(method, path, status, messages, retried=retried)


def _json_body(response: _Response) -> Any:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def _body_text(response: _Response) -> str:
    return response.content.decode("utf-8", "replace")[:2000]
