"""Broken training rows are named by file and index, or skipped where they are met when asked."""

from __future__ import annotations

import json
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


def _two_shard_run(folder):
    """A run's dataset as generate writes it: 6 rows in shards of 3, its plan in generation_config.json."""
    for k in range(2):
        shapes_dataset(3, seed=k).to_parquet(str(folder / "data" / f"train-0000{k}-of-00002.parquet"))
    (folder / "generation_config.json").write_text(json.dumps({"num_images": 6, "shard_size": 3}))


def _shorten_shard(folder):
    shapes_dataset(2, seed=1).to_parquet(str(folder / "data" / "train-00001-of-00002.parquet"))


def _shorten_shard_as_recorded(folder):
    _shorten_shard(folder)
    (folder / ".shard-00001.json").write_text(json.dumps({"missing": [4]}))  # an image skipped on purpose


def _add_another_runs_shard(folder):
    shapes_dataset(2, seed=5).to_parquet(str(folder / "data" / "train-00002-of-00003.parquet"))


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda folder: None, None),
        (_shorten_shard_as_recorded, None),
        (_shorten_shard, "shard train-00001-of-00002.parquet holds 2 rows where its run wrote 3; it was changed"),
        (_add_another_runs_shard, "mixes the shards of different runs \\(2 named -of-00002, 1 named -of-00003\\)"),
    ],
)
def test_readers_check_each_shard_against_its_runs_record(change, refusal, tmp_path, capsys):
    """Training, showing and exporting read a dataset through ``check_complete``: a shard that lost rows
    after it was written, or shards of two runs side by side, are refused with the counts found, even
    where an incomplete dataset is allowed."""
    from free_atm.cli import main
    from free_atm.data.shards import check_complete

    folder = tmp_path / "generated"
    _two_shard_run(folder)
    change(folder)
    if refusal is None:
        check_complete(folder)
        return
    for allow_incomplete in (False, True):
        with pytest.raises(ValueError, match=refusal):
            check_complete(folder, allow_incomplete)
    with pytest.raises(ValueError, match=refusal):
        load_source(str(folder), allow_incomplete=True)
    with pytest.raises(SystemExit) as exit_info:
        main(["show", str(folder), "--allow-incomplete"])
    assert exit_info.value.code == 2 and "Traceback" not in capsys.readouterr().err


def _one_row_changed(*changes: str) -> dict:
    from PIL import Image as PILImage

    row = dict(shapes_dataset(1, seed=3)[0])  # one object, masks and maps at the image's 64 x 64
    blank = PILImage.new("L", (64, 64))
    edits = {
        "four_names": {"objects": ["red circle", "blue square", "green star", "pink cross"]},
        "small_mask": {"masks": [blank.resize((32, 32))]},
        "two_maps": {"attention_maps": [blank, blank]},
        "wide_maps": {"attention_maps": [blank.resize((32, 8))]},
        "extra_box": {"boxes": [[0.0, 0.0, 1.0, 1.0]] * 2},
    }
    for change in changes:
        row.update(edits[change])
    return row


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("four_names", "row 0: 4 objects .* but 1 masks, 1 attention_maps, 1 boxes, 1 confidence"),
        ("small_mask", "row 0: masks of sizes \\[\\(32, 32\\)\\] for an image of size \\(64, 64\\)"),
        ("two_maps", "row 0: 1 objects \\['[a-z ]+'\\] but 1 masks, 2 attention_maps"),
        ("wide_maps", "row 0: attention maps of size \\(32, 8\\) for an image of size \\(64, 64\\) \\(another"),
        ("extra_box", "row 0: 1 objects .* 2 boxes"),
    ],
)
def test_a_row_whose_columns_disagree_is_named_by_show_and_by_training(change, message, tmp_path, capsys):
    from free_atm.cli import main
    from free_atm.data.schema import check_row

    row = _one_row_changed(change)
    with pytest.raises(ValueError, match=message):
        check_row(row, "0")
    smaller = dict(_one_row_changed(), attention_maps=[m.resize((16, 16)) for m in row["attention_maps"]][:1])
    check_row(smaller, "0")  # maps at a lower aggregation resolution of the same shape are fine
    from datasets import Dataset

    Dataset.from_list([row], features=shapes_dataset(1, seed=3).features).to_parquet(
        str(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet")
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["show", str(tmp_path / "ds"), "--out", str(tmp_path / "grid.png")])
    error = capsys.readouterr().err
    assert f"free-atm show: error: row {tmp_path / 'ds'}:0: " in error
    assert exit_info.value.code == 2 and "Traceback" not in error and not (tmp_path / "grid.png").exists()
    assert len(error.strip().splitlines()) == 1, error
    if change != "small_mask":  # training reads maps, not masks
        with pytest.raises(BadRowError, match=message.replace("row 0", "row data/train-00000-of-00001.parquet:0")):
            ObjectMapCollator(32)(load_source(str(tmp_path / "ds")).select([0]).to_list())
