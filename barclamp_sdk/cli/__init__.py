"""The ``crowbar`` command: a thin shell over the public API.

Exit codes: 0 success, 1 error (one line on stderr), 2 usage error,
3 proposal queued (commit could not apply yet), 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import unicodedata

import click

from barclamp_sdk.cli.app import root
from barclamp_sdk.cli.context import CLIState, EXIT_ERROR, EXIT_OK, EXIT_QUEUED, EXIT_USAGE
from barclamp_sdk.errors import CrowbarError, Interrupted, ValidationError
from barclamp_sdk.model import stopping

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_QUEUED", "EXIT_USAGE", "main"]



def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the status.

    Errors are one line on stderr; in JSON mode (``--json``) they are one JSON
    object instead: ``{"error": TEXT, "type": NAME, "exit_code": N}``, plus
    ``"errors"`` (every problem) for a validation error listing several.
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if debug else "warning: %(message)s",
    )
    state = CLIState()
    options = args[:args.index("--")] if "--" in args else args

    def fail(kind: str, text: str, code: int, exc: BaseException | None = None, *, prefix: str = "") -> int:
        """Report one error (plain or JSON) and return its exit status."""
        if debug and exc is not None and not isinstance(exc, click.ClickException):
            traceback.print_exc()
        if state.output == "json" or "--json" in options:
            report: dict[str, object] = {"error": clean(text), "type": kind, "exit_code": code}
            if isinstance(exc, ValidationError) and len(exc.errors) > 1:
                report["errors"] = [clean(e) for e in exc.errors]
            click.echo(json.dumps(report), err=True)
        elif isinstance(exc, click.ClickException):
            exc.show()
        else:
            click.echo(prefix + text, err=True)
        return code

    try:
        with stopping.handling_signals():  # SIGINT/SIGTERM stop writes at a boundary, then land below
            result = root.main(args=args, prog_name="crowbar", standalone_mode=False, obj=state)
    except Interrupted as exc:
        return fail("Interrupted", str(exc), exc.exit_code, exc, prefix="interrupted: ")
    except click.exceptions.Abort:
        return fail("Aborted", "aborted", 130)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        return fail(type(exc).__name__, exc.format_message(), exc.exit_code, exc)
    except CrowbarError as exc:
        return fail(type(exc).__name__, _one_line(exc), exc.exit_code, exc, prefix="error: ")
    except KeyboardInterrupt:
        return fail("Interrupted", "interrupted", 130)
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # a file or program the user named: say which, and why
        where = f": {exc.filename}" if exc.filename else ""
        return fail(type(exc).__name__, clean(f"{exc.strerror or exc}{where}"), EXIT_ERROR, exc, prefix="error: ")
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        return fail("InternalError", f"{type(exc).__name__}: {exc} (please report it; rerun with --debug for "
                    "details)", EXIT_ERROR, exc, prefix="internal error: ")
    return int(result) if isinstance(result, int) else EXIT_OK


def _one_line(exc: CrowbarError) -> str:
    """An error as one line; a ValidationError lists its problems (the first ten)."""
    if isinstance(exc, ValidationError) and len(exc.errors) > 1:
        shown = "; ".join(exc.errors[:10])
        more = f" (and {len(exc.errors) - 10} more)" if len(exc.errors) > 10 else ""
        text = f"{exc.subject}: {shown}{more}" if exc.subject else f"{shown}{more}"
    else:
        text = str(exc)
    return clean(text)


def clean(text: str) -> str:
    """``text`` as one line: newlines as spaces, other control characters escaped."""
    return "".join(_visible(c) for c in " ".join(text.split("\n")))


def _visible(char: str) -> str:
    """Control characters and line separators (a name given by a user, say) shown escaped."""
    if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char == "\x85":
        return char.encode("unicode_escape").decode("ascii")
    return char
