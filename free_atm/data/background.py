"""A background thread that encodes and writes shards while the pipeline generates the next batch."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from datasets import Features

from .shards import write_shard


class BackgroundShardWriter:
    """Encodes rows with ``encode`` and writes each shard in a thread; ``close()`` waits and re-raises."""

    def __init__(self, features: Features, encode: Callable[..., dict], max_pending: int = 2) -> None:
        self.features, self.encode = features, encode
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="free-atm-shard-writer", daemon=True)
        self._thread.start()

    def submit(self, samples: list[dict], path: Path) -> None:
        """Queue one shard: its samples (keyword arguments of ``encode``) and its final path."""
        if self._error is not None:
            raise self._error  # the writer's own error (a full disk, a permission), with its traceback
        self._queue.put((samples, path))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            samples, path = item
            if self._error is None:
                try:
                    write_shard([self.encode(**s) for s in samples], self.features, path)
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = error

    def close(self) -> None:
        """Write what is queued, stop the thread, and raise what went wrong in it."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error  # the writer's own error (a full disk, a permission), with its traceback
