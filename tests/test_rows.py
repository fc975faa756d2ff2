"""Broken training rows are named by file and index, or skipped where they are met when asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Image

from free_atm.training import ObjectMapCollator
from free_atm.training.rows import BadRowError, decode_row, undecoded
from free_atm.training.sources import load_source
from free_atm.world import shapes_dataset

ROOT = Path(__file__).resolve().parent.parent


def _broken(dataset, index: int, column: str):
    """``dataset`` (undecoded) with row ``index``'s image, or first map, cut to its first 40 bytes."""

    def cut(row, i):
        if i != index:
            return {}
        if column == "image":
            return {"image": {"bytes": row["image"]["bytes"][:40], "path": None}}
        first, *rest = row["attention_maps"]
        return {"attention_maps": [{"bytes": first["bytes"][:40], "path": None}, *rest]}

    return dataset.map(cut, with_indices=True)


@pytest.fixture(scope="module")
def scenes():
    return undecoded(shapes_dataset(8, seed=3), "scenes")


def test_good_rows_decode_as_datasets_would(scenes):
    decoded = shapes_dataset(8, seed=3)
    for i in range(len(scenes)):
        row = decode_row(scenes[i])
        assert row["image"].tobytes() == decoded[i]["image"].tobytes()
        assert [m.tobytes() for m in row["attention_maps"]] == [m.tobytes() for m in decoded[i]["attention_maps"]]


@pytest.mark.parametrize(
    ("column", "message"), [("image", "the image does not decode"), ("maps", "the attention map 0 does not decode")]
)
def test_a_row_that_does_not_decode_is_named(scenes, column, message):
    broken = _broken(scenes, 5, column)
    with pytest.raises(BadRowError, match=f"row scenes:5: {message}"):
        ObjectMapCollator(32)([broken[i] for i in range(4, 8)])
    # skipped where met: the batch keeps its size (processes gather it), a good row of it takes the place
    batch = ObjectMapCollator(32, skip_bad_rows=True)([broken[i] for i in range(4, 8)])
    good = ObjectMapCollator(32)([broken[i] for i in (4, 6, 7, 4)])
    for key in ("pixel_values", "object_maps"):
        assert torch.equal(batch[key], good[key])
    with pytest.raises(BadRowError, match="every row of a batch is damaged, for example row scenes:5"):
        ObjectMapCollator(32, skip_bad_rows=True)([broken[5]])


def test_maps_that_do_not_match_the_objects_are_named(scenes):
    row = dict(scenes[0], objects=[*scenes[0]["objects"], "blue star"])
    with pytest.raises(BadRowError, match=f"row scenes:0: {len(row['objects']) - 1} attention maps for"):
        decode_row(row)


def test_the_training_script_stops_at_a_bad_row_or_skips_it(tmp_path):
    data = shapes_dataset(12, seed=4).cast_column("image", Image(decode=False))
    data = _broken(undecoded(data, "x"), 7, "image").remove_columns("row")
    folder = tmp_path / "broken"
    data.cast_column("image", Image()).cast_column("attention_maps", [Image()]).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet")
    )
    assert len(load_source(str(folder))) == 12
    command = [
        sys.executable,
        str(ROOT / "trainers" / "train_contrastive.py"),
        *("--dataset_name", str(folder), "--image_size", "32", "--backbone_depths", "1", "1"),
        *("--backbone_widths", "8", "16", "--projection_dim", "8", "--hidden_dim", "16", "--max_steps", "3"),
        *("--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--save_strategy", "no"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stopped = subprocess.run([*command, "--output_dir", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert "error: row data/train-00000-of-00001.parquet:7: the image does not decode" in stopped.stderr
    skipped = subprocess.run(
        [*command, "--output_dir", str(tmp_path / "b"), "--skip_bad_rows"], env=env, capture_output=True, text=True
    )
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skipping row data/train-00000-of-00001.parquet:7: the image does not decode" in skipped.stderr


def test_a_damaged_shard_of_a_generated_dataset_is_named_before_training(tmp_path):
    from free_atm.data.shards import check_complete

    folder = tmp_path / "generated"
    for k in range(2):
        shapes_dataset(3, seed=k).to_parquet(str(folder / "data" / f"train-0000{k}-of-00002.parquet"))
    check_complete(folder)
    shard = folder / "data" / "train-00001-of-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:200])  # a copy cut short
    with pytest.raises(
        ValueError, match="shard train-00001-of-00002.parquet is damaged .*rerun its free-atm generate"
    ):
        load_source(str(folder))


def test_a_column_of_the_wrong_type_is_named(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "texts"
    Dataset.from_dict({"image": ["a.png"], "objects": [["dog"]], "attention_maps": [[]]}).to_parquet(
        str(folder / "data" / "train.parquet")
    )
    with pytest.raises(ValueError, match=f"dataset {folder} column 'image' is Value\\('string'\\), expected Image"):
        load_source(str(folder))


def test_a_dataset_whose_masks_are_all_empty_is_refused_before_training(tmp_path):
    """Every box NaN (the capture found nothing): refused by name, not trained on with a zero loss."""
    scenes = shapes_dataset(3, seed=2)
    empty = scenes.map(lambda row: {"boxes": [[float("nan")] * 4 for _ in row["boxes"]]})
    folder = tmp_path / "empty"
    empty.to_parquet(str(folder / "data" / "train.parquet"))
    with pytest.raises(ValueError, match=f"dataset '{folder}': every object mask is empty \\(3 rows\\)"):
        load_source(str(folder))
    scenes.to_parquet(str(tmp_path / "fine" / "data" / "train.parquet"))
    assert len(load_source(str(tmp_path / "fine"))) == 3
