"""One writer per dataset folder: an advisory lock held for the whole of a generation.

Pitfall: the settings check reads the folder before anything is written, so two runs started together
with different settings both pass it and then interleave their shards, and the folder's settings and card
describe only one of them. The lock is taken before that check and held until the run ends. It is an
``flock`` on a file beside the folder (the folder itself is not created until every check has passed):
the kernel releases it when the process ends, however it ends, so a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from ..paths import local_path


def lock_path(root: str | Path) -> Path:
    """The lock file of the folder ``root``: ``.<name>.lock`` beside it, named after the resolved path (a
    folder reached through a symlink has the lock of its target)."""
    root = local_path(root).resolve()
    return root.parent / f".{root.name}.lock"


@contextmanager
def writer_lock(root: str | Path, writer: str = "free-atm generate", option: str = "--out"):
    """Hold the lock of ``root`` for the block; ``ValueError`` naming the holder's process if another
    writer holds it (``writer`` and ``option`` word the message)."""
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ValueError(
                f"{option} {root} is being written by another {writer} (process {holder}); wait for it to "
                f"end, or choose another {option}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
