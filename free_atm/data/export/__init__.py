"""``free-atm export``: a free-atm dataset in the formats detectors and segmenters train on.

* ``coco``: COCO instances JSON with RLE masks (pycocotools) or polygons, and the images
  (:mod:`.coco`; detectron2, MMDetection, transformers' DETR and Mask2Former examples);
* ``yolo``: Ultralytics' YOLO-seg text files and ``data.yaml`` (:mod:`.yolo`);
* ``voc``: Pascal VOC class and object palette PNGs (:mod:`.voc`; torchvision's ``VOCSegmentation``).

Shards are exported one at a time (memory flat in the dataset's size); each finished shard leaves a part
file under ``OUT/.parts/``, so a rerun of the same command resumes after the last finished shard. One
export writes a folder at a time (:func:`free_atm.data.lock.writer_lock`), and a folder holding another
export, or anything else, is refused.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ...paths import local_path
from ...run_settings import EXPORT_RECORD, check_folder_kind, check_run_settings
from ...usage import CommandFailure
from ..lock import writer_lock
from .source import categories, dataset_shards, read_label_map, read_rows, shard_offsets

FORMATS = ("coco", "yolo", "voc")
#: VOC's PNGs hold class and object numbers in 8 bits, 255 being "void"
MAX_VOC_LABELS = 254


@dataclass(frozen=True)
class ExportConfig:
    """What ``free-atm export`` writes; a rerun into the same ``out`` must give the same settings."""

    dataset: str
    format: str
    out: str
    label_map: str | None = None
    polygons: bool = False
    tolerance: float = 0.5

    def validate(self) -> None:
        """``ValueError`` naming a bad setting, before anything is read or written."""
        if self.format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 0 <= self.tolerance <= 100:
            raise ValueError(f"--tolerance must lie in [0, 100] pixels, got {self.tolerance}")
        if self.polygons and self.format != "coco":
            raise ValueError(
                f"--polygons is for --format coco (YOLO always writes outlines), got --format {self.format}"
            )
        out, dataset = local_path(self.out).resolve(), local_path(self.dataset).resolve()
        if out == dataset or dataset in out.parents:
            raise ValueError(f"--out {self.out} lies inside the dataset {self.dataset}; choose a folder outside it")
        check_folder_kind(out, EXPORT_RECORD, "--out")


def export_dataset(config: ExportConfig) -> Path:
    """Export ``config.dataset`` (a local free-atm dataset folder) into ``config.out``; returns the folder."""
    config.validate()
    missing = [name for name in ("pycocotools", "skimage", "shapely") if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandFailure(f"free-atm export needs {' and '.join(missing)}: pip install 'free-atm[export]'")
    label_map = read_label_map(config.label_map)
    shards = dataset_shards(config.dataset)
    out = local_path(config.out)
    with writer_lock(out, "free-atm export"):
        settings = {**asdict(config), "label_map": label_map}
        check_run_settings(out, settings, ["out"], record=EXPORT_RECORD, option="--out", holds="an export")
        names = categories(shards, label_map)
        if config.format == "voc" and len(names) > MAX_VOC_LABELS:
            raise ValueError(
                f"VOC PNGs hold at most {MAX_VOC_LABELS} classes; the dataset has {len(names)} (--label-map)"
            )
        out.mkdir(parents=True, exist_ok=True)
        (out / EXPORT_RECORD).write_text(json.dumps(settings, indent=2))
        writer = _writer(config, out, names, label_map)
        parts_folder = out / ".parts"
        parts_folder.mkdir(exist_ok=True)
        parts = [parts_folder / f"{shard.stem}.part" for shard in shards]
        for shard, offset, part in zip(shards, shard_offsets(shards), parts):
            if not part.is_file():  # written last: a shard with a part file is exported whole
                writer.write(list(read_rows(shard, offset)), part)
        writer.finish(parts)
    return out


def _writer(config: ExportConfig, out: Path, names: list[str], label_map: dict[str, str]):
    from .coco import CocoWriter
    from .voc import VocWriter
    from .yolo import YoloWriter

    if config.format == "coco":
        return CocoWriter(out, names, label_map, config.polygons, config.tolerance)
    if config.format == "yolo":
        return YoloWriter(out, names, label_map, config.tolerance)
    return VocWriter(out, names, label_map)
