"""free-atm annotate: your own images (a folder, a glob, a datasets folder) into a masked dataset whose rows
are the Python ``annotate`` call's, resumable after SIGKILL, with unreadable images named or counted."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, load_dataset
from PIL import Image

from free_atm.cli import main
from free_atm.data.schema import map_image, mask_image
from free_atm.models import load_pipeline
from free_atm.seeds import derive_seed
from free_atm.world import render_scene

NUM_IMAGES = 64
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(derive_seed(31, i)) for i in range(NUM_IMAGES)]


@pytest.fixture(scope="module")
def folder(scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for i, scene in enumerate(scenes):
        Image.fromarray(scene.image).save(root / f"photo-{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def captioned(scenes, tmp_path_factory):
    """A local datasets folder of images and captions."""
    root = tmp_path_factory.mktemp("captioned")
    data = {"image": [Image.fromarray(s.image) for s in scenes], "text": [s.caption for s in scenes]}
    Dataset.from_dict(data).cast_column("image", datasets.Image()).to_parquet(root / "data" / "train.parquet")
    return root


def _rows(out):
    table = pq.read_table(sorted((out / "data").glob("train-*.parquet")))
    return table.to_pylist()


def _python_annotate(pipe, images, captions, objects, batch_size, seed=0):
    """What the command must write: ``pipe.annotate`` over the same batches, each image's noise its own."""
    masks, maps, confidence = [], [], []
    for start in range(0, len(images), batch_size):
        part = slice(start, start + batch_size)
        generators = [torch.Generator().manual_seed(derive_seed(seed, i)) for i in range(len(images))[part]]
        out = pipe.annotate(images[part], captions[part], objects[part], generator=generators)
        masks += out.masks
        maps += out.attention_maps
        confidence += out.confidence
    return masks, maps, confidence


def test_a_datasets_folder_with_captions_gives_the_python_calls_rows(captioned, scenes, tmp_path):
    out = tmp_path / "annotated"
    main(["annotate", str(captioned), "--caption-column", "text", "--objects-from-caption", "--out", str(out),
          "--batch-size", "4", "--shard-size", "6"])  # fmt: skip
    rows = _rows(out)
    assert [row["prompt"] for row in rows] == [s.caption for s in scenes]
    assert [row["objects"] for row in rows] == [s.objects for s in scenes]  # the vocabulary's words, in order
    pipe = load_pipeline("shapes")
    images = [Image.fromarray(s.image) for s in scenes]
    masks, maps, _ = _python_annotate(pipe, images, [s.caption for s in scenes], [s.objects for s in scenes], 4)
    for row, expected_masks, expected_maps in zip(rows, masks, maps):
        assert [m["bytes"] for m in row["masks"]] == [_png(mask_image(m)) for m in expected_masks]
        assert [m["bytes"] for m in row["attention_maps"]] == [_png(map_image(m)) for m in expected_maps]
    settings = json.loads((out / "generation_config.json").read_text())
    assert settings["source"] == "annotated" and settings["capture_config"] == pipe.capture_config.to_dict()
    card = (out / "README.md").read_text()
    assert f"Images from `{captioned}`" in card and "| images skipped (unreadable) | 0 |" in card
    assert len(load_dataset(str(out), split="train")) == NUM_IMAGES


def test_a_folder_of_64_images_gives_the_python_calls_rows_bit_for_bit(folder, scenes, tmp_path):
    out = tmp_path / "folder"
    main(["annotate", str(folder), "--objects", "red circle", "blue square", "--out", str(out), "--batch-size", "16"])
    rows = _rows(out)
    assert len(rows) == NUM_IMAGES and {row["prompt"] for row in rows} == {"a photo of red circle and blue square"}
    images = [Image.open(path).convert("RGB") for path in sorted(folder.iterdir())]
    objects = [["red circle", "blue square"]] * NUM_IMAGES
    expected = _python_annotate(load_pipeline("shapes"), images, [rows[0]["prompt"]] * NUM_IMAGES, objects, 16)
    for row, expected_masks, expected_maps, expected_confidence in zip(rows, *expected):
        assert [m["bytes"] for m in row["masks"]] == [_png(mask_image(m)) for m in expected_masks]
        assert [m["bytes"] for m in row["attention_maps"]] == [_png(map_image(m)) for m in expected_maps]
        assert np.array_equal(np.float32(row["confidence"]), expected_confidence)


def _png(image: Image.Image) -> bytes:
    """The bytes ``datasets`` writes for an image feature (PNG), to compare rows bit for bit."""
    from datasets.features.image import encode_pil_image

    return encode_pil_image(image)["bytes"]


def test_a_folder_with_one_damaged_image_is_one_line_or_a_counted_skip(folder, tmp_path, capsys):
    broken = tmp_path / "photos"
    broken.mkdir()
    for i, path in enumerate(sorted(folder.iterdir())[:4]):
        (broken / path.name).write_bytes(path.read_bytes() if i != 2 else b"not a png")
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", str(broken), "--objects", "red circle", "--out", str(tmp_path / "stopped")])
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    error = [line for line in lines if not line.startswith("annotating")]  # the progress bar, then one line
    assert exit_info.value.code == 2 and len(error) == 1
    assert f"cannot read {broken / 'photo-02.png'} (image 2)" in error[0]
    assert not list((tmp_path / "stopped").glob("data/*.parquet"))
    out = tmp_path / "skipping"
    main(["annotate", str(broken), "--objects", "red circle", "--out", str(out), "--skip-bad-images"])
    assert len(_rows(out)) == 3 and "| images skipped (unreadable) | 1 |" in (out / "README.md").read_text()


def test_a_killed_run_resumes_to_the_uninterrupted_dataset(folder, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(folder.iterdir())[:12]:
        (few / path.name).write_bytes(path.read_bytes())
    arguments = [str(few), "--objects", "red circle", "--shard-size", "2", "--batch-size", "2"]
    whole = tmp_path / "whole"
    main(["annotate", *arguments, "--out", str(whole)])
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "free_atm", "annotate", *arguments, "--out", str(out)]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((out / "data").glob("train-*.parquet"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= len(list((out / "data").glob("train-*.parquet"))) < 6, "the run was not interrupted mid-way"
    main(["annotate", *arguments, "--out", str(out)])
    assert _rows(out) == _rows(whole)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{folder}"], "name the objects: --objects WORD ..., or --objects-from-caption"),
        (["{folder}", "--objects-from-caption"], "--objects-from-caption needs --caption-column"),
        (["{folder}", "--objects", "cat", "--timesteps", "2000"], "--timesteps must lie in [0, 1000], got [2000]"),
        (["{folder}", "--objects", "cat", "--noise-draws", "100000"], "--noise-draws must be in [1, 64], got 100000"),
        (["{tmp}/none", "--objects", "cat"], "images '{tmp}/none': no such folder, pattern or dataset"),
        (["{tmp}/*.jpg", "--objects", "cat"], "pattern '{tmp}/*.jpg' matches no image file"),
        (["{folder}", "--objects", "cat", "--caption-column", "text"], "is for datasets"),
        (["{captioned}", "--objects", "cat", "--image-column", "photo"], "has no column 'photo' (--image-column)"),
    ],
)
def test_bad_annotate_input_is_one_line_before_any_model_loads(
    arguments, message, folder, captioned, tmp_path, capsys, monkeypatch
):
    import free_atm.models as loading

    monkeypatch.setattr(loading, "load_pipeline", lambda *a, **k: pytest.fail("the model loaded first"))
    fill = {"{folder}": str(folder), "{captioned}": str(captioned), "{tmp}": str(tmp_path)}
    arguments = [_filled(a, fill) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", *arguments, "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and error.count("\n") == 1 and _filled(message, fill) in error, error
    assert not (tmp_path / "out").exists()


def _filled(text: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():
        text = text.replace(key, value)
    return text


def test_min_confidence_drops_rows_or_objects_below_it_and_counts_them(folder, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(folder.iterdir())[:8]:
        (few / path.name).write_bytes(path.read_bytes())
    arguments = [str(few), "--objects", "red circle", "blue square", "--shard-size", "4", "--batch-size", "4"]
    main(["annotate", *arguments, "--out", str(tmp_path / "all")])
    every = _rows(tmp_path / "all")
    lowest = sorted({min(row["confidence"]) for row in every})
    cut = (lowest[len(lowest) // 2 - 1] + lowest[len(lowest) // 2]) / 2  # between two rows' lowest values
    out = tmp_path / "confident"
    main(["annotate", *arguments, "--out", str(out), "--min-confidence", str(cut)])
    kept = [row for row in every if min(row["confidence"]) >= cut]
    assert 0 < len(kept) < len(every) and _rows(out) == kept
    card = (out / "README.md").read_text()
    assert f"| images dropped (a mask below it) | {len(every) - len(kept)} |" in card
    main(["annotate", *arguments, "--out", str(out), "--min-confidence", str(cut)])  # finished: nothing to redo
    assert _rows(out) == kept
    stripped = tmp_path / "stripped"
    main(["annotate", *arguments, "--out", str(stripped), "--min-confidence", str(cut), "--drop-objects"])
    for row, whole in zip(_rows(stripped), [row for row in every if max(row["confidence"]) >= cut]):
        keep = [i for i, value in enumerate(whole["confidence"]) if value >= cut]
        assert row["seed"] == whole["seed"] and row["objects"] == [whole["objects"][i] for i in keep]
        assert row["masks"] == [whole["masks"][i] for i in keep] and row["boxes"] == [whole["boxes"][i] for i in keep]
    dropped_objects = sum(
        sum(value < cut for value in row["confidence"]) for row in every if max(row["confidence"]) >= cut
    )
    assert (
        f"| objects dropped from the rows kept (below it) | {dropped_objects} |"
        in (stripped / "README.md").read_text()
    )


def test_rows_of_an_image_without_objects_are_written_empty(folder, tmp_path, scenes):
    captions = tmp_path / "captions"
    data = {"image": [Image.fromarray(scenes[0].image)], "text": ["nothing the vocabulary names"]}
    Dataset.from_dict(data).cast_column("image", datasets.Image()).to_parquet(captions / "data" / "x.parquet")
    out = tmp_path / "empty"
    main(["annotate", str(captions), "--caption-column", "text", "--objects-from-caption", "--out", str(out)])
    (row,) = _rows(out)
    assert row["objects"] == [] and row["masks"] == []
    assert np.asarray(Image.open(io.BytesIO(row["image"]["bytes"]))).shape == (64, 64, 3)
