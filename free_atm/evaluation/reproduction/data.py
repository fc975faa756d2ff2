"""The reproduction's three datasets, made once in its work folder: the rendered "real" scenes, the
shipped model's synthetic images with their free masks, and the real scenes annotated by the same model
(``pipe.annotate``: their masks are free too, no ground truth is used)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from datasets import Dataset, load_dataset
from PIL import Image

from ...data.schema import encode_sample, sample_features
from ...generation import GenerationConfig, generate_dataset
from ...models import load_pipeline
from ...world import shapes_dataset
from .settings import ReproductionSettings

#: the real scenes are ``shapes:N``'s (seed 1); the generator's captions are other scenes' (seed 0)
REAL_SEED = 1


def _save(dataset: Dataset, folder: Path) -> str:
    """``dataset`` as one Parquet file under ``folder/data`` (``load_dataset(folder)`` reads it back)."""
    if not (folder / "data" / "train.parquet").is_file():
        (folder / "data").mkdir(parents=True, exist_ok=True)
        partial = folder / "data" / f"train.parquet.{os.getpid()}.tmp"  # shards may cut the same count
        dataset.to_parquet(str(partial))
        partial.replace(folder / "data" / "train.parquet")
    return str(folder)


def real_dataset(settings: ReproductionSettings, work: Path) -> str:
    """Rendered scenes with their kind labels (the supervised row reads them); exact masks in the maps
    column, which the published forms ignore."""
    return _save(shapes_dataset(settings.real_images, seed=REAL_SEED), work / "real")


def synthetic_dataset(settings: ReproductionSettings, work: Path, count: int) -> str:
    """The first ``count`` images the shipped model generates for the shapes world's captions (all counts
    are cut from one generated set of the largest count)."""
    if (work / f"synthetic_{count}" / "data" / "train.parquet").is_file():
        return str(work / f"synthetic_{count}")
    largest = max(settings.synthetic_images, *settings.scaling_counts)
    config = GenerationConfig(
        model="shapes", num_images=largest, out=str(work / "synthetic_all"), steps=settings.generation_steps,
        batch_size=32, seed=0,
    )  # fmt: skip
    if not (work / "synthetic_all" / "README.md").is_file():
        generate_dataset(config)
    everything = load_dataset(str(work / "synthetic_all"), split="train")
    return _save(everything.select(range(count)), work / f"synthetic_{count}")


@torch.no_grad()
def annotated_real_dataset(settings: ReproductionSettings, work: Path, batch_size: int = 32) -> str:
    """The real scenes with maps, masks and boxes from the shipped model's ``annotate`` (its capture
    defaults), in the schema of generated datasets."""
    folder = work / "real_annotated"
    if (folder / "data" / "train.parquet").is_file():
        return str(folder)
    real = shapes_dataset(settings.real_images, seed=REAL_SEED)
    pipe = load_pipeline("shapes")
    rows = []
    for start in range(0, len(real), batch_size):
        part = real.select(range(start, min(start + batch_size, len(real))))
        out = pipe.annotate(
            list(part["image"]), part["prompt"], part["objects"], generator=torch.Generator().manual_seed(start)
        )
        for i, row in enumerate(part):
            image: Image.Image = row["image"]
            masks, maps, boxes, confidence = out.masks[i], out.attention_maps[i], out.boxes[i], out.confidence[i]
            rows.append(
                encode_sample(image, row["prompt"], row["objects"], masks, maps, boxes, confidence, row["seed"])
            )
    return _save(Dataset.from_list(rows, features=sample_features()), folder)
