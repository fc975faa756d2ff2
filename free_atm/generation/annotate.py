"""``free-atm annotate``: masks for images you already have, written as a free-atm dataset.

The images come from a folder, a glob pattern, or a ``datasets`` dataset (a local folder or a Hub id);
each image's objects from ``--objects``, or from the vocabulary words its caption holds. Rows are written
in the schema and shards of ``free-atm generate`` (:mod:`.generate`), one shard at a time per process, so
a run killed at any point resumes at its first unfinished shard, and the card says the images were
annotated, with the capture settings used.

Pitfall: the noise of a batched call depends on the batch. Each image's noise is drawn from its own
generator, seeded by ``(seed, index)``, so a row is the same whatever the batch size, the number of
processes, or where a previous run stopped, and equals ``pipe.annotate`` of that image alone.
"""

from __future__ import annotations

import glob
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..attention import CaptureConfig
from ..data.background import BackgroundShardWriter
from ..data.lock import writer_lock
from ..data.schema import encode_sample, sample_features
from ..data.shards import ShardPlan
from ..diffusion.images import MAX_SIDE
from ..paths import local_path
from ..prompts.prompt import match_vocabulary
from ..run_settings import DATASET_RECORD, check_folder_kind, check_run_settings
from ..seeds import derive_seed
from ..usage import check_ranges, check_writable_folder
from .confidence_filter import check_min_confidence, filter_sample
from .generate import DTYPES, MAX_SHARDS, finish_dataset

#: the numbers of an annotation's levels and draws a run finishes in (each costs a denoiser pass per image)
ANNOTATION_RANGES = {"--noise-draws": (1, 64), "number of --timesteps": (1, 64)}

#: the file endings a folder or glob of images is read for
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class AnnotationConfig:
    """What ``free-atm annotate`` makes; a rerun into the same ``out`` must give the same settings."""

    images: str = field(metadata={"help": "a folder or glob of image files, or a datasets dataset (folder or Hub id)"})
    out: str = field(default="outputs/annotated", metadata={"help": "the dataset folder; rerun to resume it"})
    model: str = field(default="shapes", metadata={"help": "'shapes' (shipped), 'tiny-random', a folder or Hub id"})
    objects: tuple[str, ...] | None = field(
        default=None, metadata={"help": "the objects of every image (with --objects-from-caption: the vocabulary)"}
    )
    objects_from_caption: bool = field(
        default=False, metadata={"help": "each image's objects: the vocabulary's words found in its caption"}
    )
    allow_absent_objects: bool = field(
        default=False, metadata={"help": "map objects an image's caption lacks (else they are an error)"}
    )
    image_column: str = field(default="image", metadata={"help": "a dataset's image column"})
    caption_column: str | None = field(default=None, metadata={"help": "a dataset's caption column"})
    timesteps: tuple[int, ...] | None = field(
        default=None, metadata={"help": "noise levels 0-1000 averaged over, up to 64 (default: the family's)"}
    )
    noise_draws: int = field(default=1, metadata={"help": "noise draws per level, 1 to 64"})
    seed: int = field(default=0, metadata={"help": "with an image's index, seeds its noise"})
    batch_size: int = field(default=8, metadata={"help": "images per pipeline call (per process)"})
    shard_size: int = field(default=256, metadata={"help": "rows per Parquet shard (the unit of resuming)"})
    skip_bad_images: bool = field(
        default=False, metadata={"help": "skip (and count) images that cannot be read instead of stopping"}
    )
    min_confidence: float = field(
        default=0.0, metadata={"help": "keep only rows whose every mask has at least this confidence (0: all)"}
    )
    drop_objects: bool = field(
        default=False, metadata={"help": "with --min-confidence: drop the objects below it, not their rows"}
    )
    dtype: str | None = field(default=None, metadata={"help": "float32, float16 or bfloat16 weights"})
    threshold_method: str | None = field(default=None, metadata={"help": "masks: fixed, otsu or competition"})
    threshold: float | None = field(default=None, metadata={"help": "masks: the fixed threshold in [0, 1]"})
    pixel_refinement: int | None = field(
        default=None, metadata={"help": "iterations of pixel refinement, 0 (off) to 100"}
    )
    refinement: str | None = field(default=None, metadata={"help": "none, or self_attention"})

    def capture_overrides(self) -> dict[str, Any]:
        names = ("threshold_method", "threshold", "pixel_refinement", "refinement")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def validate(self) -> None:
        """Check what needs no model; ``ValueError`` naming the bad value."""
        from ..models import check_model_reference

        for name in ("noise_draws", "batch_size", "shard_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {self.seed}")
        check_min_confidence(self.min_confidence)
        if self.timesteps is not None and not all(0 <= t <= 1000 for t in self.timesteps):
            raise ValueError(f"--timesteps must lie in [0, 1000], got {list(self.timesteps)}")
        levels = None if self.timesteps is None else len(self.timesteps)
        check_ranges({"--noise-draws": self.noise_draws, "number of --timesteps": levels}, ANNOTATION_RANGES)
        if not self.objects and not self.objects_from_caption:
            raise ValueError("name the objects: --objects WORD ..., or --objects-from-caption with a caption column")
        if self.objects_from_caption and not self.caption_column:
            raise ValueError("--objects-from-caption needs --caption-column (the captions to find the objects in)")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        CaptureConfig.check_overrides(self.capture_overrides())
        check_writable_folder(self.out, "--out")
        check_model_reference(self.model)


class ImageSource:
    """The images to annotate, by index: files (a folder, in name order, or a glob pattern) or the rows of
    a ``datasets`` dataset. :meth:`load` returns the image (RGB), its caption (``None`` without a caption
    column) and where it came from, for messages."""

    def __init__(self, config: AnnotationConfig) -> None:
        self.config = config
        path = local_path(config.images)
        self.files: list[Path] | None = None
        self.dataset = None
        if path.is_dir() and not (path / "data").is_dir() and not any(path.glob("*.parquet")):
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise ValueError(f"folder {config.images} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
        elif any(c in config.images for c in "*?[") and not path.exists():
            self.files = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise ValueError(f"pattern {config.images!r} matches no image file")
        else:
            self.dataset = self._dataset(config)
        if self.files is not None and config.caption_column:
            raise ValueError(
                f"--caption-column {config.caption_column!r} is for datasets; {config.images} holds files"
            )

    @staticmethod
    def _dataset(config: AnnotationConfig):
        from ..data.loading import load_dataset_split
        from ..usage import load_reporting_failures, names_a_folder

        if names_a_folder(config.images) and not local_path(config.images).exists():
            raise ValueError(f"images {config.images!r}: no such folder, pattern or dataset")
        dataset = load_reporting_failures(lambda: load_dataset_split(config.images), config.images, "dataset")
        for option, column in (("--image-column", config.image_column), ("--caption-column", config.caption_column)):
            if column is not None and column not in dataset.column_names:
                raise ValueError(
                    f"dataset {config.images} has no column {column!r} ({option}); its columns: {dataset.column_names}"
                )
        return dataset

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.dataset)

    def load(self, index: int) -> tuple[Image.Image, str | None, str]:
        if self.files is not None:
            where = f"{self.files[index]} (image {index})"
            try:
                with Image.open(self.files[index]) as image:
                    return _checked(image.convert("RGB"), where), None, where
            except (UnidentifiedImageError, OSError, SyntaxError) as error:
                raise ValueError(f"cannot read {where}: {error}") from None
        where = f"{self.config.images} row {index}"
        row = self.dataset[index]
        image = row[self.config.image_column]
        if not isinstance(image, Image.Image):
            raise ValueError(
                f"{where}: column {self.config.image_column!r} holds {type(image).__name__}, not an image"
            )
        caption = row[self.config.caption_column] if self.config.caption_column else None
        return _checked(image.convert("RGB"), where), caption, where


def _checked(image: Image.Image, where: str) -> Image.Image:
    """``image`` at a size annotate takes: each side a multiple of 8 (cropped to it) and at most MAX_SIDE."""
    if max(image.size) > MAX_SIDE or min(image.size) < 8:
        raise ValueError(f"{where} is {image.width}x{image.height}; annotate takes sides of 8 to {MAX_SIDE} pixels")
    width, height = image.width // 8 * 8, image.height // 8 * 8
    return image if (width, height) == image.size else image.crop((0, 0, width, height))


def image_objects(config: AnnotationConfig, caption: str | None) -> tuple[str, list[str]]:
    """An image's caption and objects: the vocabulary words its caption holds (``--objects-from-caption``),
    or ``--objects`` in the caption given, else in a caption made of them."""
    if config.objects_from_caption:
        from ..models import named_model

        vocabulary = list(config.objects or named_model(config.model).vocabulary())
        return caption, match_vocabulary(caption, vocabulary)
    objects = list(config.objects)
    return caption if caption is not None else "a photo of " + " and ".join(objects), objects


def annotate_dataset(config: AnnotationConfig, pipe=None) -> Path:
    """Annotate the missing shards of ``config.out`` with this process's share; return the folder."""
    state = PartialState(cpu=not torch.cuda.is_available())
    config.validate()
    source = ImageSource(config)  # files or dataset found, columns checked: before any model loads
    with writer_lock(config.out, "free-atm annotate") if state.is_main_process else nullcontext():
        return _annotate(config, source, state, pipe)


def _annotate(config: AnnotationConfig, source: ImageSource, state: PartialState, pipe) -> Path:
    from ..models import load_pipeline

    root = local_path(config.out)
    plan = ShardPlan(len(source), config.shard_size)
    if plan.num_shards > MAX_SHARDS:
        raise ValueError(f"{len(source):,} images make more than {MAX_SHARDS:,} shards; raise --shard-size")
    settings = {**asdict(config), "source": "annotated", "num_images": len(source)}
    check_folder_kind(root, DATASET_RECORD, "--out")
    # before the model loads (the capture settings in effect are known after it), then with them
    check_run_settings(root, settings, ["out", "capture_config"], DATASET_RECORD, "--out", "a dataset annotated")
    pipe = pipe or load_pipeline(config.model, state.device, DTYPES.get(config.dtype))
    capture = pipe.capture_config.updated(config.capture_overrides())
    settings["capture_config"] = capture.to_dict()
    check_run_settings(root, settings, ["out"], record=DATASET_RECORD, option="--out", holds="a dataset annotated")
    if state.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        (root / DATASET_RECORD).write_text(json.dumps(settings, indent=2))
    state.wait_for_everyone()
    mine = plan.shards_of_process(state.process_index, state.num_processes)
    todo = [shard for shard in mine if not plan.is_complete(root, shard)]
    features = sample_features()
    writer = BackgroundShardWriter(features, encode_sample)
    progress = tqdm(total=sum(len(plan.indices(s)) for s in todo), unit="img", disable=not state.is_local_main_process,
                    desc=f"annotating {len(todo)} shards")  # fmt: skip
    try:
        for shard in todo:
            rows, record = annotate_rows(pipe, config, source, plan.indices(shard), capture, progress)
            plan.write_record(root, shard, record)  # before the shard: a shard with its final name has its record
            writer.submit(rows, plan.path(root, shard))
    finally:
        progress.close()
        writer.close()
    state.wait_for_everyone()
    if state.is_main_process:
        finish_dataset(root, plan, settings, features)
    state.wait_for_everyone()
    return root


def annotate_rows(pipe, config: AnnotationConfig, source: ImageSource, indices: range, capture, progress):
    """The rows of ``indices`` (unencoded), and the shard's record: the indices it lacks (``missing``:
    unreadable images skipped, rows below ``--min-confidence``) and their counts."""
    rows, batch = [], []
    record = {"missing": [], "skipped_images": 0, "dropped_rows": 0, "dropped_objects": 0}

    def flush() -> None:
        for (index, *_), row in zip(batch, _annotated(pipe, config, batch, capture)):
            kept, dropped = filter_sample(row, config.min_confidence, config.drop_objects)
            if kept is None:
                record["missing"].append(index)
                record["dropped_rows"] += 1
            else:
                rows.append(kept)
                record["dropped_objects"] += dropped
        progress.update(len(batch))
        batch.clear()

    for index in indices:
        try:
            image, caption, where = source.load(index)
        except ValueError:
            if not config.skip_bad_images:
                raise
            record["missing"].append(index)
            record["skipped_images"] += 1
            progress.update(1)
            continue
        caption, objects = image_objects(config, caption)
        batch.append((index, image, caption, objects))
        if len(batch) == config.batch_size:
            flush()
    if batch:
        flush()
    return rows, record


def _annotated(pipe, config: AnnotationConfig, batch: list, capture: CaptureConfig) -> list[dict]:
    """One pipeline call for the images of ``batch`` that name objects; rows for all of them."""
    named = [item for item in batch if item[3]]
    found = {}
    if named:
        seeds = [derive_seed(config.seed, index) for index, *_ in named]
        out = pipe.annotate(
            [image for _, image, _, _ in named],
            [caption for _, _, caption, _ in named],
            [objects for *_, objects in named],
            timesteps=config.timesteps,
            noise_draws=config.noise_draws,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
            capture_config=capture,
            allow_absent_objects=config.allow_absent_objects,
        )
        found = {
            index: (out.masks[k], out.attention_maps[k], out.boxes[k], out.confidence[k])
            for k, (index, *_) in enumerate(named)
        }
    rows = []
    for index, image, caption, objects in batch:
        empty = (np.zeros((0, image.height, image.width), bool), np.zeros((0, 1, 1)), np.zeros((0, 4), np.float32),
                 np.zeros(0, np.float32))  # fmt: skip
        masks, maps, boxes, confidence = found.get(index, empty)
        rows.append(dict(image=image, prompt=caption, objects=objects, masks=masks, attention_maps=maps, boxes=boxes,
                         confidence=confidence, seed=derive_seed(config.seed, index)))  # fmt: skip
    return rows
