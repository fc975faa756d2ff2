"""free-atm export: COCO, YOLO-seg and VOC written from a dataset and read back by each format's own reader."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from free_atm.cli import main
from free_atm.data import sample_features
from free_atm.data.export import ExportConfig, export_dataset
from free_atm.data.export.polygons import mask_polygons
from free_atm.data.schema import encode_sample
from free_atm.data.shards import ShardPlan, write_shard
from free_atm.masks import mask_boxes
from free_atm.seeds import derive_seed
from free_atm.world import render_scene

NUM_IMAGES, SHARD_SIZE = 64, 24


def _rows() -> list[tuple[Image.Image, list[str], np.ndarray]]:
    """Rendered scenes (exact masks, disjoint: the visible parts), and one row whose masks overlap and one
    whose object's mask is empty."""
    rows = []
    for index in range(NUM_IMAGES - 2):
        scene = render_scene(derive_seed(11, index))
        rows.append((Image.fromarray(scene.image), scene.objects, scene.masks))
    scene = render_scene(derive_seed(11, 999))
    overlapping = np.zeros((2, 64, 64), bool)
    overlapping[0, 10:40, 10:40], overlapping[1, 30:50, 30:60] = True, True
    rows.append((Image.fromarray(scene.image), ["red circle", "blue square"], overlapping))
    empty = np.zeros((1, 64, 64), bool)
    rows.append((Image.fromarray(scene.image), ["green star"], empty))
    return rows


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 64-row free-atm dataset in three shards, and its rows."""
    root = tmp_path_factory.mktemp("exported") / "dataset"
    rows = _rows()
    plan = ShardPlan(len(rows), SHARD_SIZE)
    for shard in range(plan.num_shards):
        encoded = [
            encode_sample(
                image,
                "a prompt",
                objects,
                masks,
                np.zeros((len(masks), 16, 16)),
                mask_boxes(masks),
                [1] * len(masks),
                i,
            )
            for i, (image, objects, masks) in ((i, rows[i]) for i in plan.indices(shard))
        ]
        write_shard(encoded, sample_features(), plan.path(root, shard))
    return root, rows


def _export(dataset_root, out, fmt, **options):
    return export_dataset(ExportConfig(str(dataset_root), fmt, str(out), **options))


def test_coco_masks_come_back_through_pycocotools_exactly(dataset, tmp_path):
    root, rows = dataset
    out = _export(root, tmp_path / "coco", "coco")
    coco = COCO(str(out / "annotations.json"))
    names = sorted({phrase for _, objects, _ in rows for phrase in objects})
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == names
    assert sorted(coco.getImgIds()) == list(range(NUM_IMAGES))
    checked = 0
    for image_id, (image, objects, masks) in enumerate(rows):
        info = coco.loadImgs(image_id)[0]
        assert np.array_equal(np.asarray(Image.open(out / info["file_name"])), np.asarray(image))
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        kept = [(o, m) for o, m in zip(objects, masks) if m.any()]  # an empty mask has no instance
        assert len(annotations) == len(kept)
        for annotation, (phrase, mask) in zip(annotations, kept):
            assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
            assert coco.loadCats(annotation["category_id"])[0]["name"] == phrase
            ys, xs = np.nonzero(mask)
            expected = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert annotation["bbox"] == [int(v) for v in expected] and annotation["area"] == int(mask.sum())
            assert annotation["iscrowd"] == 0
            checked += 1
    assert checked > NUM_IMAGES  # every object of every image, checked one by one
    ids = [annotation["id"] for annotation in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_coco_polygons_and_yolo_lines_rasterise_back_to_the_masks(dataset, tmp_path):
    root, rows = dataset
    coco = COCO(str(_export(root, tmp_path / "polygons", "coco", polygons=True) / "annotations.json"))
    ious = []
    for annotation in coco.dataset["annotations"]:
        mask = rows[annotation["image_id"]][2][
            [o for o in rows[annotation["image_id"]][1]].index(annotation["phrase"])
        ]
        drawn = coco.annToMask(annotation).astype(bool)
        ious.append((drawn & mask).sum() / (drawn | mask).sum())
    assert np.mean(ious) >= 0.95

    out = _export(root, tmp_path / "yolo", "yolo")
    names = sorted({phrase for _, objects, _ in rows for phrase in objects})
    assert "names:\n" + "".join(f"  {i}: {n!r}\n" for i, n in enumerate(names)) in (out / "data.yaml").read_text()
    ious = []
    for image_id, (image, objects, masks) in enumerate(rows):
        assert np.array_equal(np.asarray(Image.open(out / "images" / "train" / f"{image_id:08d}.png")), image)
        lines = (out / "labels" / "train" / f"{image_id:08d}.txt").read_text().splitlines()
        kept = [(o, m) for o, m in zip(objects, masks) if m.any()]
        assert len(lines) == len(kept)
        for line, (phrase, mask) in zip(lines, kept):
            values = line.split()
            assert names[int(values[0])] == phrase
            outline = np.array(values[1:], float).reshape(-1, 2) * (image.width, image.height)
            drawn = coco_mask.decode(coco_mask.frPyObjects([outline.ravel().tolist()], *mask.shape))[..., 0] > 0
            ious.append((drawn & mask).sum() / (drawn | mask).sum())
    assert np.mean(ious) >= 0.95, np.mean(ious)


def test_an_object_in_pieces_is_one_yolo_line_covering_every_piece():
    mask = np.zeros((20, 20), bool)
    mask[2:6, 2:6], mask[12:18, 10:16] = True, True
    from free_atm.data.export.yolo import joined_outline

    outline = joined_outline(mask_polygons(mask, 0.0))
    drawn = coco_mask.decode(coco_mask.frPyObjects([outline.ravel().tolist()], 20, 20))[..., 0] > 0
    assert np.array_equal(drawn, mask)


def test_voc_pngs_hold_the_class_ids_and_void_where_objects_overlap(dataset, tmp_path):
    root, rows = dataset
    out = _export(root, tmp_path / "voc", "voc")
    names = sorted({phrase for _, objects, _ in rows for phrase in objects})
    labels = (out / "labelmap.txt").read_text().splitlines()[1:]
    assert [line.split(":")[0] for line in labels] == ["background", *names]
    assert (out / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == [
        f"{i:08d}" for i in range(NUM_IMAGES)
    ]
    for image_id, (_, objects, masks) in enumerate(rows):
        classes = Image.open(out / "SegmentationClass" / f"{image_id:08d}.png")
        instances = np.asarray(Image.open(out / "SegmentationObject" / f"{image_id:08d}.png"))
        assert classes.mode == "P"
        classes = np.asarray(classes)
        covered = masks.sum(0)
        assert (classes[covered == 0] == 0).all() and (classes[covered > 1] == 255).all()
        for number, (phrase, mask) in enumerate(zip(objects, masks), start=1):
            alone = mask & (covered == 1)
            assert (classes[alone] == names.index(phrase) + 1).all() and (instances[alone] == number).all()
    assert (np.asarray(Image.open(out / "SegmentationClass" / f"{NUM_IMAGES - 2:08d}.png")) == 255).any()


def test_a_label_map_merges_phrases_into_categories(dataset, tmp_path):
    root, rows = dataset
    phrases = sorted({phrase for _, objects, _ in rows for phrase in objects})
    label_map = tmp_path / "labels.json"
    label_map.write_text(json.dumps({phrase: phrase.split()[1] for phrase in phrases}))  # "red circle" -> circle
    coco = COCO(str(_export(root, tmp_path / "merged", "coco", label_map=str(label_map)) / "annotations.json"))
    assert [c["name"] for c in coco.dataset["categories"]] == sorted({p.split()[1] for p in phrases})
    for annotation in coco.dataset["annotations"]:
        assert coco.loadCats(annotation["category_id"])[0]["name"] == annotation["phrase"].split()[1]


def test_a_rerun_resumes_after_the_last_finished_shard_and_equals_a_whole_run(dataset, tmp_path):
    root, _ = dataset
    whole = _export(root, tmp_path / "whole", "coco")
    out = _export(root, tmp_path / "cut", "coco")
    # as if killed while the last shard was written: its part file, some images and the JSON missing
    last_part = sorted((out / ".parts").glob("*.part"))[-1]
    last_part.unlink()
    (out / "annotations.json").unlink()
    (out / "images" / f"{NUM_IMAGES - 1:08d}.png").unlink()
    _export(root, out, "coco")
    assert (out / "annotations.json").read_bytes() == (whole / "annotations.json").read_bytes()
    assert (out / "images" / f"{NUM_IMAGES - 1:08d}.png").is_file()
    with pytest.raises(ValueError, match="holds an export with other settings \\(format differ\\)"):
        _export(root, out, "yolo")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--format", "tfrecord"], "--format must be one of coco, yolo, voc, got 'tfrecord'"),
        (["--format", "yolo", "--polygons"], "--polygons is for --format coco"),
        (["--format", "coco", "--tolerance", "-1"], "--tolerance must lie in [0, 100] pixels, got -1.0"),
        (["--format", "coco", "--label-map", "{tmp}/none.json"], "--label-map {tmp}/none.json does not exist"),
        (["--format", "coco", "--out", "{dataset}/inside"], "lies inside the dataset"),
        (["--format", "coco", "--out", "{tmp}/full"], "holds other files and no free_atm_export.json"),
    ],
)
def test_bad_export_input_is_one_line_before_anything_is_written(arguments, message, dataset, tmp_path, capsys):
    root, _ = dataset
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    arguments = [a.replace("{tmp}", str(tmp_path)).replace("{dataset}", str(root)) for a in arguments]
    if "--out" not in arguments:
        arguments += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(root), *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message.replace("{tmp}", str(tmp_path)) in error, error
    assert not (tmp_path / "out").exists() and not (root / "inside").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


def test_export_runs_from_the_command_line(dataset, tmp_path):
    root, _ = dataset
    command = [sys.executable, "-m", "free_atm", "export", str(root), "--format", "voc", "--out", str(tmp_path / "v")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"exported {root} as voc to {tmp_path / 'v'}" and result.stderr == ""
