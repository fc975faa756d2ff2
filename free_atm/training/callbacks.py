"""``ProbeCallback``: kNN and linear probes of the backbone being trained, as a ``TrainerCallback``."""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter

from torch import nn
from transformers import TrainerCallback

from .collate import ObjectMapCollator
from .probes import probe_backbone


class ProbeCallback(TrainerCallback):
    """kNN and linear-probe accuracy of the backbone on a labelled dataset, at every evaluation and at the
    end of training, on the main process only; each result goes into the log history, its keys prefixed
    with ``prefix``. ``backbone`` takes the trained model to the module to probe (``model.backbone`` by
    default); ``pooling`` is one of :data:`free_atm.training.probes.POOLINGS`."""

    def __init__(
        self,
        train_dataset,
        test_dataset,
        collator: ObjectMapCollator,
        k: int = 20,
        pooling: str = "object",
        prefix: str = "",
        backbone: Callable[[nn.Module], nn.Module] = attrgetter("backbone"),
    ):
        self.train_dataset, self.test_dataset, self.collator, self.k = train_dataset, test_dataset, collator, k
        self.pooling, self.prefix, self.backbone = pooling, prefix, backbone
        self.history: list[dict] = []

    def _run(self, state, model):
        if not state.is_world_process_zero:  # every process holds the same weights
            return
        probed = probe_backbone(
            self.backbone(model), self.train_dataset, self.test_dataset, self.collator, self.k, self.pooling
        )
        result = {"step": state.global_step, **{self.prefix + name: value for name, value in probed.items()}}
        model.train()
        self.history.append(result)
        state.log_history.append(result)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self._run(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._run(state, model)
