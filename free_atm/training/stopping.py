"""Stopping a long training loop on a signal without losing the steps since its last checkpoint.

A run that checkpoints every 15 minutes and is ended by Ctrl-C or by ``kill`` (a scheduler's or a
session's end) loses up to 15 minutes of work. Inside :class:`StopSignals`, the first SIGINT or SIGTERM only
asks the loop to stop: it finishes the step it is in, saves its checkpoint at that step and ends.

Pitfall: a loop that never reads :attr:`StopSignals.received` would ignore Ctrl-C for good, so a second
signal interrupts at once (``KeyboardInterrupt``), as it would without the handler.
"""

from __future__ import annotations

import signal
import sys

#: the signals that ask a loop to stop: Ctrl-C in a terminal, and ``kill``'s default
STOPPING = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Within ``with StopSignals(name) as stop:``, SIGINT and SIGTERM set ``stop.received`` (the signal) and
    say on standard error that the command named ``name`` stops after the step under way, instead of
    interrupting; a second one raises ``KeyboardInterrupt``. The earlier handlers come back on exit. Only the
    main thread may install signal handlers, as Python requires."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {number: signal.signal(number, self._ask_to_stop) for number in STOPPING}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _ask_to_stop(self, number: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(number)
        print(
            f"{self.name}: {self.received.name} received; stopping after the step under way (again: at once)",
            file=sys.stderr,
            flush=True,
        )

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the received signal: 128 plus its number."""
        if self.received is None:
            raise ValueError("no stopping signal was received")
        return 128 + int(self.received)
