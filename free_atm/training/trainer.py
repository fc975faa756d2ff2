"""``FreeATMTrainer``: what every free-atm ``transformers.Trainer`` subclass shares.

Pitfall: reading a loss component with ``.item()`` every step synchronises the device with the host and
stalls the pipeline of kernels; the sub-metrics are summed on the device and read once per log.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Trainer


class FreeATMTrainer(Trainer):
    """A ``Trainer`` whose subclasses report per-step sub-metrics with :meth:`accumulate` (kept on the
    device, averaged into the next training log) and whose model card, once written from ``hub_cards/``
    into ``output_dir``, is not replaced by the Trainer's own on ``push_to_hub``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def accumulate(self, **metrics: torch.Tensor) -> None:
        """Add one training step's ``metrics`` (scalars) to the sums of the current logging window."""
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + value.detach()
        self._count += 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._count and "loss" in logs:
            logs.update({k: round(float(v) / self._count, 4) for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)

    def create_model_card(self, *args, **kwargs) -> None:
        """Keeps a card already in ``output_dir`` (the one the training script writes from ``hub_cards/``,
        which ``push_to_hub`` would otherwise overwrite); else the Trainer's own."""
        if not (Path(self.args.output_dir) / "README.md").is_file():
            super().create_model_card(*args, **kwargs)
