"""What every framework's script takes: ``DataArguments`` (the training data, and the dataset they describe),
``FreeATMTrainingArguments`` (transformers' ``TrainingArguments``, with numbers a run can finish with) and
the ``ScriptArgumentParser`` that reads them."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import HfArgumentParser, TrainingArguments

from ..paths import local_path
from ..usage import OneLineErrors, check_ranges
from .sources import COLUMNS, load_source, mix_sources

logger = logging.getLogger(__name__)


#: the largest values a run finishes with: images up to 1,024 pixels, probes of up to 100,000 scenes
DATA_RANGES = {"--image_size": (1, 1024), "--probe_scenes": (0, 100_000)}


@dataclass
class DataArguments:
    dataset_name: str = field(metadata={"help": "dataset folder, Hub id, or shapes:N"})
    real_dataset_name: str | None = field(default=None, metadata={"help": "second source for the mix"})
    real_ratio: float = field(default=0.0, metadata={"help": "share of samples drawn from the second source"})
    image_size: int = field(default=64, metadata={"help": "the side images are resized to, 1 to 1,024"})
    max_objects: int = 3
    probe_scenes: int = field(
        default=0, metadata={"help": "rendered scenes for the kNN and linear probes, up to 100,000 (0: none)"}
    )
    allow_incomplete: bool = field(
        default=False,
        metadata={"help": "train on the finished shards of a generation that stopped early (else refused)"},
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "skip rows whose image or maps do not decode, where they are met; else stop naming the row"},
    )

    def __post_init__(self) -> None:
        for name in ("image_size", "max_objects"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.probe_scenes < 0 or self.probe_scenes == 1:
            raise ValueError(f"--probe_scenes must be 0 (no probe) or at least 2, got {self.probe_scenes}")
        check_ranges({"--image_size": self.image_size, "--probe_scenes": self.probe_scenes}, DATA_RANGES)

    def training_data(self, columns: Sequence[str] = COLUMNS) -> Dataset:
        """The ``columns`` of ``dataset_name``, mixed with ``real_dataset_name`` at ``real_ratio``."""
        names = [name for name in (self.dataset_name, self.real_dataset_name) if name]
        sources = [load_source(name, columns, self.allow_incomplete) for name in names]
        return mix_sources(sources[0], sources[1] if len(sources) > 1 else None, self.real_ratio, columns=columns)


def _positive(value) -> bool:
    return math.isfinite(value) and value > 0


def _non_negative(value) -> bool:
    return math.isfinite(value) and value >= 0


#: each checked number: its test and the range it states when it fails
TRAINING_RANGES = {
    "learning_rate": (_positive, "a positive finite number"),
    "per_device_train_batch_size": (_positive, "at least 1"),
    "gradient_accumulation_steps": (_positive, "at least 1"),
    "weight_decay": (_non_negative, "a finite number, 0 or more"),
    "max_grad_norm": (_non_negative, "a finite number, 0 or more (0: no clipping)"),
    "adam_epsilon": (_positive, "a positive finite number"),
    "adam_beta1": (lambda b: 0 <= b < 1, "in [0, 1)"),
    "adam_beta2": (lambda b: 0 <= b < 1, "in [0, 1)"),
    "max_steps": (lambda n: n > 0 or n == -1, "positive, or -1 to train for --num_train_epochs"),
    "save_steps": (_positive, "positive"),
}


@dataclass
class FreeATMTrainingArguments(TrainingArguments):
    """transformers' ``TrainingArguments``, checked as they are parsed, before any data or model loads:
    every number in :data:`TRAINING_RANGES` within its range (a learning rate of ``inf`` would save
    non-finite weights; ``--max_steps 0`` would train one step), and ``--output_dir`` expanded
    (:func:`free_atm.paths.local_path`)."""

    def __post_init__(self) -> None:
        for name, (accepts, wanted) in TRAINING_RANGES.items():
            if not accepts(getattr(self, name)):
                raise ValueError(f"--{name} must be {wanted}, got {getattr(self, name)}")
        if self.max_steps == -1 and not _positive(self.num_train_epochs):
            raise ValueError(f"--num_train_epochs must be a positive finite number, got {self.num_train_epochs}")
        if self.output_dir is not None:
            self.output_dir = str(local_path(self.output_dir))
        super().__post_init__()


class ScriptArgumentParser(OneLineErrors, HfArgumentParser):
    """The training scripts' ``HfArgumentParser``: an argument error is one line naming the script and its
    ``--help`` (:class:`free_atm.usage.OneLineErrors`), not the usage of every flag first."""
