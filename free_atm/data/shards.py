"""Shards of a dataset being generated: which samples each holds, which are finished, and writing them.

A shard is written to a temporary name in the same folder and renamed when complete, so a file with a
final name is complete unless it was damaged afterwards; a finished shard is also checked against the
row count its name promises, so a truncated file is found and regenerated.

Beside each shard a run may keep a record (``.shard-00000.json``): what the shard holds besides its rows,
the indices it lacks on purpose (images skipped as unreadable, rows dropped below a confidence) and how
many rows or objects were dropped. The record is written before its shard, so a shard with its final
name always has its record; a run killed between the two writes both again.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, Features


@dataclass(frozen=True)
class ShardPlan:
    """``num_samples`` sample indices cut into shards of ``shard_size`` consecutive indices."""

    num_samples: int
    shard_size: int

    def __post_init__(self) -> None:
        if self.num_samples <= 0:
            raise ValueError(f"the number of samples must be positive, got {self.num_samples}")
        if self.shard_size <= 0:
            raise ValueError(f"the shard size must be positive, got {self.shard_size}")

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)

    def indices(self, shard: int) -> range:
        """The sample indices of ``shard``."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_samples))

    def path(self, root: str | Path, shard: int) -> Path:
        return Path(root) / "data" / f"train-{shard:05d}-of-{self.num_shards:05d}.parquet"

    def shards_of_process(self, rank: int, world_size: int) -> list[int]:
        """Shards taken by process ``rank`` of ``world_size`` (round robin, so loads stay even)."""
        return list(range(rank, self.num_shards, world_size))

    def record_path(self, root: str | Path, shard: int) -> Path:
        return Path(root) / f".shard-{shard:05d}.json"

    def record(self, root: str | Path, shard: int) -> dict:
        """What the run recorded beside ``shard`` (:meth:`write_record`); ``{}`` when nothing or damaged (the
        shard then counts as unfinished unless it holds every row, and is written again with its record)."""
        try:
            return json.loads(self.record_path(root, shard).read_text())
        except (OSError, ValueError):
            return {}

    def write_record(self, root: str | Path, shard: int, record: dict) -> None:
        """Record ``record`` beside ``shard`` (before the shard is written): ``"missing"``, the indices the
        shard lacks on purpose, and counts (ints) that the dataset card sums over shards."""
        path = self.record_path(root, shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, path)

    def is_complete(self, root: str | Path, shard: int) -> bool:
        """Whether ``shard`` is on disk, readable, and holds all its rows but those its record says it lacks."""
        path = self.path(root, shard)
        if not path.is_file():
            return False
        expected = len(self.indices(shard)) - len(self.record(root, shard).get("missing", []))
        try:
            return pq.ParquetFile(path).metadata.num_rows == expected
        except Exception:  # an unreadable file is an unfinished shard  # noqa: BLE001
            return False


def check_complete(root: str | Path, allow_incomplete: bool = False) -> None:
    """Raise ``ValueError`` if the dataset folder ``root`` is a generation that has not finished: a
    generation config without shards, or fewer shards than their names (``-of-N``) promise. Each shard on
    disk is whole (written under a temporary name), so ``allow_incomplete`` uses the rows that are there.
    A folder or Hub id not written by ``free-atm generate`` is not checked."""
    root = Path(root).expanduser()
    if not root.is_dir() or allow_incomplete:
        return
    shards = sorted((root / "data").glob("train-*-of-*.parquet"))
    if not shards:
        if (root / "generation_config.json").is_file():
            raise ValueError(
                f"dataset {root} holds no finished shard yet (its generation stopped before the first); rerun "
                "its free-atm generate command to finish it"
            )
        return
    for shard in shards:  # a shard damaged after it was written (a copy cut short) is named here, not in training
        try:
            pq.read_metadata(shard)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise ValueError(
                f"dataset {root}: shard {shard.name} is damaged ({error}); rerun its free-atm generate command, "
                "which writes damaged shards again"
            ) from None
    expected = int(shards[0].stem.rsplit("-of-", 1)[1])
    if len(shards) < expected:
        raise ValueError(
            f"dataset {root} is incomplete: {len(shards)} of {expected} shards; rerun its free-atm generate "
            "command to finish it, or allow an incomplete dataset (--allow_incomplete, --allow-incomplete) "
            "to use the rows that are there"
        )


def write_shard(rows: list[dict], features: Features, path: Path) -> None:
    """Encode ``rows`` with ``features`` and write them to ``path`` atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Dataset.from_list(rows, features=features).to_parquet(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
