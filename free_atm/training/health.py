"""Training health: a run whose loss or weights stop being finite ends with one line naming the step, and
never writes a checkpoint or a model from them, so the last checkpoint on disk is a finite one.

Pitfall: reading the loss on the host every step (``.item()``) synchronises the device with it and stalls
the queue of kernels. :class:`FiniteWatch` keeps the first non-finite step on the device and is read only
where something is logged or written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


class TrainingDiverged(ValueError):
    """The loss or the weights of a run stopped being finite (a learning rate or loss weight too high)."""


class FiniteWatch:
    """Watches a run's losses for the first step whose loss is not finite, on the loss's device."""

    def __init__(self) -> None:
        self._first: torch.Tensor | None = None  # 0 while every loss seen was finite

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Note ``loss`` (any shape) as the loss of ``step`` (counted from 1); no host synchronisation."""
        bad = torch.where(torch.isfinite(loss.detach()).all(), 0, step)
        self._first = bad if self._first is None else torch.where(self._first > 0, self._first, bad)

    def check(self, parameters: Iterable[torch.Tensor], step: int, where: str | Callable[[], str]) -> None:
        """Raise :class:`TrainingDiverged` if a loss seen so far or one of ``parameters`` is not finite;
        ``step`` is the current step and ``where`` says what the message points the user to (the last
        checkpoint on disk, and what to change): a string, or a function made only when the run diverged.
        One host synchronisation for the losses and one for all the weights."""
        first = 0 if self._first is None else int(self._first)
        finite = [torch.isfinite(p).all() for p in parameters]
        if not first and (not finite or bool(torch.stack(finite).all())):
            return
        said = where() if callable(where) else where
        if first:
            raise TrainingDiverged(f"training diverged: the loss is not finite at step {first}; {said}")
        raise TrainingDiverged(f"training diverged: the weights are not finite after step {step}; {said}")
