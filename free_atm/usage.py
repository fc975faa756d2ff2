"""How every free-atm command ends on an error a user can cause or meet: one line on stderr naming the value,
path or row and what to do, exit status 2 for bad input (argparse's convention for usage errors) and 1
for a failure of the environment; the traceback only with ``--debug`` or ``FREE_ATM_DEBUG=1``.

:func:`describe_failure` is the one map from exceptions to those lines:

* bad input: ``ValueError`` (a value out of range, a malformed file, a damaged row, an object missing
  from its prompt), ``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError``, ``FileExistsError``;
* the environment: :class:`CommandFailure` (the Hub unreachable, an upload refused), ``PermissionError``,
  a full disk (``ENOSPC``, ``EDQUOT``), memory (``MemoryError``, torch's failed allocations on the CPU and
  the GPU), and the network errors of ``requests`` and ``httpx``.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .paths import local_path

T = TypeVar("T")

DEBUG_VARIABLE = "FREE_ATM_DEBUG"


class CommandFailure(RuntimeError):
    """A failure of the environment a command met, not of its input: reported in one line, exit status 1."""


class OneLineErrors:
    """Mixed into an ``argparse.ArgumentParser`` (free-atm's commands, the training scripts'
    ``HfArgumentParser``): an argument error is one line naming the program and pointing to its ``--help``;
    the usage, dozens of lines, stays behind ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_ranges(values: dict[str, int | float | None], ranges: dict[str, tuple[int, int]]) -> None:
    """Raise ``ValueError`` naming the first option of ``values`` (``None``: not given) outside its range in
    ``ranges``: the ranges a command finishes in, stated in its ``--help``."""
    for option, value in values.items():
        low, high = ranges[option]
        if value is not None and not low <= value <= high:
            raise ValueError(f"{option} must be in [{low:,}, {high:,}], got {value}")


def names_a_folder(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id, so that its absence is an error to
    report before anything asks the Hub: written as one (``./x``, ``/x``, ``~/x``), or ``owner/name`` whose
    ``owner`` is a folder here (``outputs/datset``, a typo of ``outputs/dataset``)."""
    parts = Path(name).parts
    return name.startswith((".", "/", "~")) or (len(parts) > 1 and Path(parts[0]).is_dir())


BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx
    import requests

    return requests.exceptions.ConnectionError, requests.exceptions.Timeout, httpx.TransportError


def _allocation_failed(error: BaseException) -> bool:
    """Whether ``error`` is torch's report of a failed allocation: a ``RuntimeError`` on the CPU
    ("DefaultCPUAllocator: not enough memory"), ``torch.OutOfMemoryError`` on a GPU."""
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


def describe_failure(error: BaseException) -> tuple[str, int] | None:
    """The line and exit status that report ``error``, or ``None`` when it is a bug (keep the traceback)."""
    if isinstance(error, CommandFailure):
        return str(error), 1
    if isinstance(error, PermissionError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}; choose a place you can write to, or change its permissions", 1
    if isinstance(error, OSError) and error.errno in FULL_DISK:
        where = f" writing {error.filename}" if error.filename else ""
        return f"no space left on the device{where}; free some space and rerun the command (it resumes)", 1
    if isinstance(error, MemoryError) or _allocation_failed(error):
        return "out of memory; lower the batch size or the image size, or use a machine with more memory", 1
    if isinstance(error, _network_errors()):
        return f"the network failed ({error}); check the connection, or use local folders", 1
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        name = str(error.filename or "")
        shown = name if len(name) <= 80 else f"{name[:40]}...{name[-37:]}"
        return f"a name in {shown!r} is longer than the file system allows; choose a shorter one", 2
    if isinstance(error, BAD_INPUT):
        return str(error), 2
    return None


def check_writable_folder(path: str | Path, option: str) -> None:
    """Raise before any work when ``path`` cannot become a folder to write in: ``ValueError`` when it or one
    of its parents is a file, ``PermissionError`` when its nearest existing folder is not writable."""
    path = local_path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        detail = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ValueError(f"{option} {path} {detail}, not a folder; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{option} {path}: {existing} is not writable", str(existing))


def load_reporting_failures(load: Callable[[], T], reference: str, what: str = "model") -> T:
    """``load()`` of ``reference`` (a folder or Hub id), its ``OSError`` turned into one line naming it: a
    ``ValueError`` for a local folder (something in it is missing or damaged), a :class:`CommandFailure`
    for a Hub id (no network, no such repo)."""
    try:
        return load()
    except OSError as error:
        if local_path(reference).exists():
            raise ValueError(f"{what} folder {reference!r} could not be loaded: {error}") from error
        raise CommandFailure(
            f"{what} {reference!r} could not be fetched from the Hugging Face Hub ({error}); check the id and the "
            "network, or pass a local folder"
        ) from error


def quiet_libraries() -> None:
    """Keep the libraries' warnings and bars out of a command's output: transformers, diffusers and datasets
    log errors only and draw no bars of their own (the command draws its progress). ``--verbose`` and
    ``--debug`` skip it."""
    import transformers.utils.logging  # first: importing diffusers already logs through transformers

    transformers.utils.logging.set_verbosity_error()
    import datasets.utils.logging
    import diffusers.utils.logging

    for library in (transformers.utils.logging, diffusers.utils.logging, datasets.utils.logging):
        library.set_verbosity_error()
        library.disable_progress_bar()


#: what an interrupted command says it leaves, unless it says more (every writer resumes on a rerun)
INTERRUPTED = "what was finished is kept; rerun the same command to go on from it"


def run_reporting_bad_input(
    command: Callable[[], None], name: str, debug: bool = False, interrupted: str = INTERRUPTED
) -> None:
    """Run ``command``; on an error a user can cause or meet (:func:`describe_failure`) print
    ``"{name}: error: ..."`` and exit with its status, unless ``debug`` or the environment variable
    ``FREE_ATM_DEBUG`` is set (scripts whose ``--debug`` flag transformers owns). Ctrl-C prints
    ``"{name}: interrupted; {interrupted}"`` (what is kept, how to go on) and exits with status 130."""
    try:
        command()
    except KeyboardInterrupt:
        if debug or os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"\n{name}: interrupted; {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        report = describe_failure(error)
        if report is None or debug or os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"{name}: error: {report[0]}", file=sys.stderr)
        raise SystemExit(report[1]) from None
