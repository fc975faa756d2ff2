"""Measurements of the model being trained as ``TrainerCallback``s: ``MeasureCallback`` (when and where a
measurement runs and where its results go) and ``ProbeCallback`` (kNN and linear probes of the backbone)."""

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


class MeasureCallback(TrainerCallback):
    """Runs :meth:`measure` at every evaluation and at the end of training, on the main process only
    (every process holds the same weights); each round's results, with the step, go into ``history`` and
    the trainer's log history as one entry."""

    def __init__(self):
        self.history: list[dict] = []

    def measure(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def _run(self, state, model) -> None:
        if not state.is_world_process_zero:
            return
        result = {"step": state.global_step, **self.measure(model)}
        self.history.append(result)
        state.log_history.append(result)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(state, model)


class ProbeCallback(MeasureCallback):
    """kNN and linear-probe accuracy of the backbone for each of ``probes``. ``backbone`` takes the trained
    model to the module to probe (``model.backbone`` by default)."""

    def __init__(
        self,
        probes: Sequence[Probe],
        collator: ObjectMapCollator,
        k: int = 20,
        backbone: Callable[[nn.Module], nn.Module] = attrgetter("backbone"),
    ):
        super().__init__()
        self.probes, self.collator, self.k, self.backbone = list(probes), collator, k, backbone

    def measure(self, model: nn.Module) -> dict[str, float]:
        backbone, result = self.backbone(model), {}
        for probe in self.probes:
            probed = probe_backbone(backbone, probe.train, probe.test, self.collator, self.k, probe.pooling)
            result.update({probe.prefix + name: value for name, value in probed.items()})
        model.train()
        return result
