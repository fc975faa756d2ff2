"""``ProbeCallback``: kNN and linear probes of the backbone being trained, as a ``TrainerCallback``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from datasets import Dataset
from torch import nn
from transformers import TrainerCallback

from .collate import ObjectMapCollator
from .probes import probe_backbone


@dataclass
class Probe:
    """One probe: fitted on ``train``, scored on ``test`` (rows with ``image``, ``attention_maps`` and
    per-object ``labels``), features pooled by ``pooling``, results named with ``prefix``."""

    train: Dataset
    test: Dataset
    pooling: str = "object"
    prefix: str = ""


class ProbeCallback(TrainerCallback):
    """kNN and linear-probe accuracy of the backbone for each of ``probes``, at every evaluation and at
    the end of training, on the main process only; each round's results go into the log history as one
    entry. ``backbone`` takes the trained model to the module to probe (``model.backbone`` by default)."""

    def __init__(
        self,
        probes: Sequence[Probe],
        collator: ObjectMapCollator,
        k: int = 20,
        backbone: Callable[[nn.Module], nn.Module] = attrgetter("backbone"),
    ):
        self.probes, self.collator, self.k, self.backbone = list(probes), collator, k, backbone
        self.history: list[dict] = []

    def _run(self, state, model):
        if not state.is_world_process_zero:  # every process holds the same weights
            return
        backbone, result = self.backbone(model), {"step": state.global_step}
        for probe in self.probes:
            probed = probe_backbone(backbone, probe.train, probe.test, self.collator, self.k, probe.pooling)
            result.update({probe.prefix + name: value for name, value in probed.items()})
        model.train()
        self.history.append(result)
        state.log_history.append(result)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(state, model)
