"""The ``crowbar`` command: a thin shell over the public API.

Exit codes: 0 success, 1 error (one line on stderr), 2 usage error,
3 proposal queued (commit could not apply yet), 130 interrupted.
"""

from __future__ import annotations

import logging
import sys
import traceback
import unicodedata

import click

from barclamp_sdk.cli.app import root
from barclamp_sdk.cli.context import EXIT_ERROR, EXIT_OK, EXIT_QUEUED, EXIT_USAGE
from barclamp_sdk.errors import CrowbarError, Interrupted, ValidationError
from barclamp_sdk.model import stopping

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_QUEUED", "EXIT_USAGE", "main"]



def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the status."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s" if debug else "warning: %(message)s",
    )
    try:
        with stopping.handling_signals():  # SIGINT/SIGTERM stop writes at a boundary, then land below
            result = root.main(args=args, prog_name="crowbar", standalone_mode=False)
    except Interrupted as exc:
        click.echo(f"interrupted: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except CrowbarError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {_one_line(exc)}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except OSError as exc:  # a file or program the user named: say which, and why
        if debug:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(clean(f"error: {exc.strerror or exc}{where}"), err=True)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            traceback.print_exc()
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} "
            "(please report it; rerun with --debug for details)",
            err=True,
        )
        return EXIT_ERROR
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
