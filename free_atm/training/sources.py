"""Training data: a free-atm dataset by name, and the paper's mix of two sources."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Dataset, interleave_datasets

from ..data.loading import load_dataset_split
from ..data.schema import check_columns
from ..data.shards import check_complete
from ..paths import local_path
from ..usage import names_a_folder
from ..world import shapes_dataset
from .rows import ROW, undecoded

#: what every framework trains on; vision-language pretraining adds the captions (``prompt``)
COLUMNS = ("image", "objects", "attention_maps")


def load_source(name: str, columns: Sequence[str] = COLUMNS, allow_incomplete: bool = False) -> Dataset:
    """A dataset folder or Hub id (its train split), or ``shapes:N``: N rendered shapes-world scenes;
    images and maps left undecoded, with each row's number (:mod:`free_atm.training.rows`).
    ``ValueError`` names a bad ``N``, a missing folder, an unfinished generation (unless
    ``allow_incomplete``), or the ``columns`` a dataset lacks."""
    if name.startswith("shapes:"):
        count = name.split(":", 1)[1]
        if not count.isdigit() or int(count) == 0:
            raise ValueError(f"{name!r}: shapes:N needs a positive number of scenes, got {count!r}")
        return undecoded(shapes_dataset(int(count), seed=1), name)
    if names_a_folder(name) and not local_path(name).exists():
        raise ValueError(f"dataset folder {name!r} does not exist")
    check_complete(name, allow_incomplete)
    dataset = load_dataset_split(name)
    hint = "make one with `free-atm generate`, or train on rendered scenes with shapes:N"
    check_columns(dataset.features, list(columns), name, hint)
    check_some_object_masked(dataset, name)
    return undecoded(dataset, name, shard_row_names(name, len(dataset)))


def shard_row_names(name: str, num_rows: int) -> list[str] | None:
    """For a local folder of Parquet files, each row's file and index in it (``data/train-00003-of-00010.parquet:17``),
    read from the files' metadata alone; ``None`` for anything else, or when the files hold other rows."""
    root = local_path(name)
    files = sorted(root.glob("data/*.parquet")) if root.is_dir() else []
    counts = [pq.ParquetFile(file).metadata.num_rows for file in files]
    if not files or sum(counts) != num_rows:
        return None
    return [f"{file.relative_to(root)}:{i}" for file, count in zip(files, counts) for i in range(count)]


def check_some_object_masked(dataset: Dataset, name: str) -> None:
    """Raise ``ValueError`` when no object of ``dataset`` has a non-empty mask: every box is NaN (read from
    the ``boxes`` column, no image decoded), so a run would train nothing and save a model as if it had."""
    if "boxes" not in dataset.column_names:
        return
    values = pc.list_flatten(pc.list_flatten(dataset.data.column("boxes")))
    if len(values) == 0 or not pc.any(pc.invert(pc.is_nan(values))).as_py():
        raise ValueError(
            f"dataset {name!r}: every object mask is empty ({len(dataset)} rows), so there is nothing to train "
            "on; check the capture settings it was generated with (its card), or generate it again"
        )


def mix_sources(
    primary: Dataset,
    secondary: Dataset | None = None,
    ratio: float = 0.0,
    seed: int = 0,
    columns: Sequence[str] = COLUMNS,
) -> Dataset:
    """The ``columns`` of ``primary``, with a share ``ratio`` of samples drawn from ``secondary``."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the mix ratio must lie in [0, 1), got {ratio}")
    data = primary.select_columns([*columns, ROW])
    if secondary is None or ratio == 0.0:
        return data
    other = secondary.select_columns([*columns, ROW]).cast(data.features)
    return interleave_datasets(
        [data, other], probabilities=[1 - ratio, ratio], seed=seed, stopping_strategy="all_exhausted"
    )
