"""``FreeATMTrainer``: what every free-atm ``transformers.Trainer`` subclass shares.

Pitfalls: reading a loss component with ``.item()`` every step synchronises the device with the host
and stalls the pipeline of kernels, so the sub-metrics are summed on the device and read once per log.
And transformers' ``Trainer`` resumes a checkpoint with ``load_state_dict(strict=False)`` under the names
the weights were saved with, while models that rename their modules in memory (ViTMAE's layers since
transformers 5: ``q_proj`` for ``attention.query``) save the old names: the renamed layers silently keep
their initial weights. Resuming here goes through ``from_pretrained``, which maps the names, and fails
loudly on any weight it cannot place.

Every step's loss is watched for the first non-finite one (:class:`.health.FiniteWatch`, read on the host
only when a log or a model is written): a diverged run ends with one line naming the step, and nothing is
saved from non-finite weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel, Trainer
from transformers.trainer_callback import ProgressCallback

from ..run_settings import last_complete_checkpoint
from .health import FiniteWatch


class FreeATMTrainer(Trainer):
    """A ``Trainer`` whose subclasses report per-step sub-metrics with :meth:`accumulate` (kept on the
    device, averaged into the next training log) and whose model card, once written from ``hub_cards/``
    into ``output_dir``, is not replaced by the Trainer's own on ``push_to_hub``; a run whose loss or
    weights stop being finite raises :class:`.health.TrainingDiverged` before anything is saved from them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._watch = FiniteWatch()

    def training_step(self, model, inputs, *args, **kwargs) -> torch.Tensor:
        loss = super().training_step(model, inputs, *args, **kwargs)
        self._watch.observe(loss, self.state.global_step + 1)
        return loss

    def train(self, *args, **kwargs):
        """``Trainer.train``; when it fails, its progress bar is closed first, so that the error reported
        after it is the last line printed (an open bar redraws itself when the process exits)."""
        try:
            return super().train(*args, **kwargs)
        except BaseException:
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
                    callback.training_bar.close()
            raise

    def check_finite(self) -> None:
        """Raise :class:`.health.TrainingDiverged` if a loss so far or a weight is not finite."""

        def where() -> str:  # looked up only when the run diverged: every log and save checks
            last = last_complete_checkpoint(self.args.output_dir)
            kept = f"the last checkpoint, {last}, was written before it" if last else "no checkpoint was written"
            return f"{kept}; lower --learning_rate and start again in a new --output_dir"

        trained = (p for p in self.model.parameters() if p.requires_grad)  # frozen weights cannot diverge
        self._watch.check(trained, self.state.global_step, where)

    def save_model(self, *args, **kwargs) -> None:
        self.check_finite()
        super().save_model(*args, **kwargs)

    def accumulate(self, **metrics: torch.Tensor) -> None:
        """Add one training step's ``metrics`` (scalars) to the sums of the current logging window."""
        for key, value in metrics.items():
            self._sums[key] = self._sums.get(key, 0.0) + value.detach()
        self._count += 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            self.check_finite()
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

    def end_run(self) -> None:
        """Wait until every process is done (the main one writes the cards and exports after training),
        then destroy the process group. A rank that exits while its gloo group is alive and another rank
        still works can abort in the C++ runtime ("terminate called without an active exception"), and the
        launcher then fails the whole run although every file was written."""
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()

    def create_model_card(self, *args, **kwargs) -> None:
        """Keeps a card already in ``output_dir`` (the one the training script writes from ``hub_cards/``,
        which ``push_to_hub`` would otherwise overwrite); else the Trainer's own."""
        if not (Path(self.args.output_dir) / "README.md").is_file():
            super().create_model_card(*args, **kwargs)
