"""Loading a dataset by the name a user typed: a local folder, read literally, or a Hub id.

Pitfall: ``datasets.load_dataset(folder)`` resolves a folder's data files as glob patterns, so a folder
named ``ds[1]`` (a character class) matches no file and is reported as holding no data, although the
files are there. A local folder's Parquet files are given to the Parquet builder as the folder's own name,
escaped, and the files' pattern. That reading does not parse the folder's card either (the features are
in the files), so a damaged ``README.md`` does not stop the rows from loading.
"""

from __future__ import annotations

import glob

from datasets import Dataset, load_dataset

from ..paths import local_path


def load_dataset_split(name: str, split: str = "train") -> Dataset:
    """The ``split`` of the dataset ``name``: a local folder (``~`` and ``$VARS`` expanded, no globbing)
    whose Parquet files lie under ``data/`` (``{split}-*.parquet``, else every ``*.parquet``), or anything
    ``datasets.load_dataset`` takes (a Hub id, a folder of another layout)."""
    folder = local_path(name)
    data = folder / "data"
    for pattern in (f"{split}-*.parquet", "*.parquet"):
        if data.is_dir() and any(data.glob(pattern)):
            return load_dataset("parquet", data_files={split: f"{glob.escape(str(data))}/{pattern}"}, split=split)
    return load_dataset(str(folder) if folder.is_dir() else name, split=split)
