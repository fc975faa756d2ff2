"""Training data: a free-atm dataset by name, and the paper's mix of two sources."""

from __future__ import annotations

from datasets import Dataset, interleave_datasets, load_dataset

from ..shapes import shapes_dataset

COLUMNS = ["image", "attention_maps"]


def load_source(name: str) -> Dataset:
    """A dataset folder or Hub id (its train split), or ``shapes:N``: N rendered shapes-world scenes."""
    if name.startswith("shapes:"):
        return shapes_dataset(int(name.split(":", 1)[1]), seed=1)
    return load_dataset(name, split="train")


def mix_sources(primary: Dataset, secondary: Dataset | None = None, ratio: float = 0.0, seed: int = 0) -> Dataset:
    """The image and map columns of ``primary``, with a share ``ratio`` of samples drawn from ``secondary``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the mix ratio must lie in [0, 1), got {ratio}")
    data = primary.select_columns(COLUMNS)
    if secondary is None or ratio == 0.0:
        return data
    other = secondary.select_columns(COLUMNS).cast(data.features)
    return interleave_datasets(
        [data, other], probabilities=[1 - ratio, ratio], seed=seed, stopping_strategy="all_exhausted"
    )
