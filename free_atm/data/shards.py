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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, Features

from ..paths import local_path
from ..run_settings import DATASET_RECORD


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

    def expected_rows(self, root: str | Path, shard: int) -> int:
        """The rows ``shard`` holds when finished: its indices but those its record says it lacks."""
        return len(self.indices(shard)) - len(self.record(root, shard).get("missing", []))

    def is_complete(self, root: str | Path, shard: int) -> bool:
        """Whether ``shard`` is on disk, readable, and holds its :meth:`expected_rows`."""
        path = self.path(root, shard)
        if not path.is_file():
            return False
        try:
            return pq.ParquetFile(path).metadata.num_rows == self.expected_rows(root, shard)
        except Exception:  # an unreadable file is an unfinished shard  # noqa: BLE001
            return False


def check_complete(root: str | Path, allow_incomplete: bool = False) -> None:
    """Raise ``ValueError`` if the dataset folder ``root`` is not the whole output of one run: a generation
    config without shards, shards of different runs side by side (``-of-00002`` beside ``-of-00003``), a
    damaged shard, a shard holding another number of rows than its run wrote into it (its plan in
    ``generation_config.json`` and its record), or fewer shards than their names promise (allowed with
    ``allow_incomplete``: each shard on disk is whole, written under a temporary name). A folder or Hub id
    not written by free-atm is not checked."""
    root = local_path(root)
    if not root.is_dir():
        return
    shards = sorted((root / "data").glob("train-*-of-*.parquet"))
    config = root / DATASET_RECORD
    if not shards:
        if config.is_file():
            raise ValueError(
                f"dataset {root} holds no finished shard yet (its generation stopped before the first); rerun "
                "its free-atm generate command to finish it"
            )
        return
    totals = Counter(shard.stem.rsplit("-of-", 1)[1] for shard in shards)
    if len(totals) > 1:
        found = ", ".join(f"{count} named -of-{total}" for total, count in sorted(totals.items()))
        raise ValueError(
            f"dataset {root} mixes the shards of different runs ({found}); keep the shards of one run in "
            "its data folder"
        )
    plan = _recorded_plan(config)
    for shard in shards:
        _check_shard(root, shard, plan)
    expected = int(next(iter(totals)))
    if len(shards) < expected and not allow_incomplete:
        raise ValueError(
            f"dataset {root} is incomplete: {len(shards)} of {expected} shards; rerun its free-atm generate "
            "command to finish it, or allow an incomplete dataset (--allow_incomplete, --allow-incomplete) "
            "to use the rows that are there"
        )


def _recorded_plan(config: Path) -> ShardPlan | None:
    """The shard plan a dataset's run recorded in its config, or ``None`` (no config, or not a plan)."""
    try:
        settings = json.loads(config.read_text())
        return ShardPlan(int(settings["num_images"]), int(settings["shard_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_shard(root: Path, shard: Path, plan: ShardPlan | None) -> None:
    """Raise ``ValueError`` if ``shard`` is damaged (a copy cut short) or holds another number of rows than
    its run wrote (``plan``, less the indices its record says it lacks)."""
    try:
        rows = pq.read_metadata(shard).num_rows
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ValueError(
            f"dataset {root}: shard {shard.name} is damaged ({error}); rerun its free-atm generate command, "
            "which writes damaged shards again"
        ) from None
    index = int(shard.stem.split("-")[1])
    if plan is None or index >= plan.num_shards:
        return
    expected = plan.expected_rows(root, index)
    if rows != expected:
        raise ValueError(
            f"dataset {root}: shard {shard.name} holds {rows} rows where its run wrote {expected}; it was changed "
            "after it was written: delete it and rerun the dataset's free-atm command, which writes it again"
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
