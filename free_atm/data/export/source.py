"""Reading a free-atm dataset for export: its shards in order, each row's image, objects and masks, and the
categories the objects map to. One shard is in memory at a time, so memory stays flat in the dataset's size."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from ...paths import local_path
from ..schema import check_columns
from ..shards import check_complete

#: the columns an export reads
COLUMNS = ("image", "objects", "masks")


@dataclass
class ExportRow:
    """One row: its number in the dataset (``image_id``), image, object phrases and masks (bool ``(M, H, W)``)."""

    image_id: int
    image: Image.Image
    objects: list[str]
    masks: np.ndarray


def dataset_shards(dataset: str | Path) -> list[Path]:
    """The Parquet shards of a local free-atm dataset folder, in order; ``ValueError`` for a folder that is
    missing, unfinished, or lacks the exported columns."""
    root = local_path(dataset)
    if not root.is_dir():
        raise ValueError(f"dataset folder {str(dataset)!r} does not exist")
    check_complete(root)
    shards = sorted((root / "data").glob("*.parquet"))
    if not shards:
        raise ValueError(f"dataset folder {root} holds no Parquet shard under data/; make one with free-atm generate")
    from datasets import Features

    schema = pq.read_schema(shards[0])
    features = Features.from_arrow_schema(schema)
    check_columns(features, list(COLUMNS), str(root))
    return shards


def shard_offsets(shards: list[Path]) -> list[int]:
    """The dataset row number of each shard's first row (from the files' metadata alone)."""
    counts = [pq.read_metadata(shard).num_rows for shard in shards]
    return [int(sum(counts[:i])) for i in range(len(shards))]


def read_label_map(path: str | Path | None) -> dict[str, str]:
    """A label map file: JSON ``{"phrase": "category", ...}``; ``ValueError`` naming the file otherwise."""
    if path is None:
        return {}
    path = local_path(path)
    if not path.is_file():
        raise ValueError(f"--label-map {path} does not exist (a JSON object of phrase -> category)")
    try:
        values = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"--label-map {path} is not valid JSON ({error})") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise ValueError(f"--label-map {path} must be a JSON object of phrase -> category strings")
    return values


def categories(shards: list[Path], label_map: dict[str, str]) -> list[str]:
    """Every category of the dataset, sorted: each object phrase through ``label_map`` (a phrase it does not
    name is its own category). Reads the ``objects`` column only."""
    names: set[str] = set()
    for shard in shards:
        for phrases in pq.read_table(shard, columns=["objects"]).column("objects").to_pylist():
            names.update(label_map.get(phrase, phrase) for phrase in phrases)
    return sorted(names)


def read_rows(shard: Path, offset: int) -> Iterator[ExportRow]:
    """The rows of one shard, decoded; ``ValueError`` naming the shard and row for a mask whose size or
    count disagrees with its image and objects."""
    table = pq.read_table(shard, columns=list(COLUMNS))
    for index, row in enumerate(table.to_pylist()):
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        masks = [np.asarray(Image.open(io.BytesIO(m["bytes"]))) > 127 for m in row["masks"]]
        where = f"{shard.name}:{index}"
        if len(masks) != len(row["objects"]):
            raise ValueError(f"row {where} names {len(row['objects'])} objects but holds {len(masks)} masks")
        for mask in masks:
            if mask.shape != (image.height, image.width):
                raise ValueError(
                    f"row {where} has a {mask.shape[1]}x{mask.shape[0]} mask for a {image.width}x{image.height} image"
                )
        stacked = np.stack(masks) if masks else np.zeros((0, image.height, image.width), bool)
        yield ExportRow(offset + index, image, list(row["objects"]), stacked)
