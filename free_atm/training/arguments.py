"""``DataArguments``: the training data every framework's script takes, and the dataset they describe."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from .sources import COLUMNS, load_source, mix_sources

logger = logging.getLogger(__name__)


@dataclass
class DataArguments:
    dataset_name: str = field(metadata={"help": "dataset folder, Hub id, or shapes:N"})
    real_dataset_name: str | None = field(default=None, metadata={"help": "second source for the mix"})
    real_ratio: float = field(default=0.0, metadata={"help": "share of samples drawn from the second source"})
    image_size: int = 64
    max_objects: int = 3
    probe_scenes: int = field(default=0, metadata={"help": "rendered scenes for the kNN and linear probes (0: none)"})
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

    def training_data(self, columns: Sequence[str] = COLUMNS) -> Dataset:
        """The ``columns`` of ``dataset_name``, mixed with ``real_dataset_name`` at ``real_ratio``."""
        names = [name for name in (self.dataset_name, self.real_dataset_name) if name]
        sources = [load_source(name, columns, self.allow_incomplete) for name in names]
        return mix_sources(sources[0], sources[1] if len(sources) > 1 else None, self.real_ratio, columns=columns)
