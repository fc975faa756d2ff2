"""How every free-atm command ends on bad input: one line on stderr and exit status 2 (argparse's own
convention for usage errors), the traceback only when asked for.

Bad input surfaces as ``ValueError`` (a value out of range, a malformed file, an object missing from
its prompt) or ``FileNotFoundError``; a failure of the environment the command met (the Hub unreachable, an
upload refused) as :class:`CommandFailure`, one line and exit status 1; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

DEBUG_VARIABLE = "FREE_ATM_DEBUG"


class CommandFailure(RuntimeError):
    """A failure of the environment a command met, not of its input: reported in one line, exit status 1."""


def names_a_folder(name: str) -> bool:
    """Whether ``name`` is written as a local path (``./x``, ``/x``, ``~/x``) rather than a Hub id, so that
    its absence is an error to report before anything asks the Hub."""
    return name.startswith((".", "/", "~"))


def run_reporting_bad_input(command: Callable[[], None], name: str, debug: bool = False) -> None:
    """Run ``command``; on bad input print ``"{name}: error: ..."`` and exit 2, unless ``debug`` or the
    environment variable ``FREE_ATM_DEBUG`` is set (scripts whose ``--debug`` flag transformers owns)."""
    try:
        command()
    except (ValueError, FileNotFoundError, CommandFailure) as error:
        if debug or os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(1 if isinstance(error, CommandFailure) else 2) from None
