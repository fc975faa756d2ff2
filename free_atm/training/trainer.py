"""``FreeATMTrainer``: what every free-atm ``transformers.Trainer`` subclass shares.

Pitfalls: reading a loss component with ``.item()`` every step synchronises the device with the host
and stalls the pipeline of kernels, so the sub-metrics are summed on the device and read once per log.
And transformers' ``Trainer`` resumes a checkpoint with ``load_state_dict(strict=False)`` under the names
the weights were saved with, while models that rename their modules in memory (ViTMAE's layers since
transformers 5: ``q_proj`` for ``attention.query``) save the old names: the renamed layers silently keep
their initial weights. Resuming here goes through ``from_pretrained``, which maps the names, and fails
loudly on any weight it cannot place.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, Trainer


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

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model or self.model
        if not isinstance(model, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(model).from_pretrained(resume_from_checkpoint, config=model.config)
        model.load_state_dict(saved.state_dict(), strict=True)

    def create_model_card(self, *args, **kwargs) -> None:
        """Keeps a card already in ``output_dir`` (the one the training script writes from ``hub_cards/``,
        which ``push_to_hub`` would otherwise overwrite); else the Trainer's own."""
        if not (Path(self.args.output_dir) / "README.md").is_file():
            super().create_model_card(*args, **kwargs)
