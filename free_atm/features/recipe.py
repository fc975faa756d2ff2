"""Training a head on frozen diffusion features: the arguments, the labelled data, the feature cache, the
``Trainer``. Shared by ``trainers/train_diffusion_probe.py``, the sweep benchmark and the tests.

The labelled task by default is the one ``free-atm probe --pooling mean`` scores: the shape kind of the lone
object of rendered one-object scenes (``shapes:N``, half to train and half to test, seed 2), so that the
numbers stand beside the contrastive and MAE backbones'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import ClassLabel, Dataset, load_dataset
from torch.utils.data import DataLoader
from transformers import EvalPrediction, TrainingArguments

from ..paths import local_path
from ..training.probes import shapes_probe_splits
from ..training.trainer import FreeATMTrainer
from ..usage import names_a_folder
from .extractor import DiffusionFeatureExtractor
from .heads.base import DiffusionHeadModel
from .heads.configuration import DifFeedConfig, DifFormerConfig, LinearProbeConfig
from .heads.diffeed import DifFeed
from .heads.difformer import DifFormer
from .heads.linear import DiffusionLinearProbe
from .loading import load_feature_extractor

HEADS = {
    "linear": (LinearProbeConfig, DiffusionLinearProbe),
    "difformer": (DifFormerConfig, DifFormer),
    "diffeed": (DifFeedConfig, DifFeed),
}


@dataclass
class DiffusionHeadArguments:
    """The U-Net, what is read from it, and the head."""

    unet: str = field(default="shapes", metadata={"help": "diffusers pipeline folder or Hub id, or shapes"})
    head: str = field(default="linear", metadata={"help": "linear, difformer or diffeed"})
    blocks: list[str] = field(
        default_factory=lambda: ["up_blocks.1.resnets.0"], metadata={"help": "blocks to read (--list_blocks)"}
    )
    timesteps: list[int] = field(default_factory=lambda: [100], metadata={"help": "noise levels t (0: clean)"})
    feedback_blocks: list[str] = field(
        default_factory=list, metadata={"help": "DifFeed: decoder blocks fed back (default: every up resnet)"}
    )
    noise_seed: int = 0
    noise_draws: int = field(default=1, metadata={"help": "noise draws averaged per image and t"})
    pool_size: int | None = field(default=None, metadata={"help": "linear: 2 (diffssl); DifFormer: 16"})
    hidden_size: int = field(default=256, metadata={"help": "DifFormer width"})
    num_layers: int = 2
    num_heads: int = 8
    list_blocks: bool = field(default=False, metadata={"help": "print the U-Net's blocks and stop"})

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.noise_draws < 1:
            raise ValueError(f"--noise_draws must be at least 1, got {self.noise_draws}")
        if self.pool_size is not None and self.pool_size < 1:
            raise ValueError(f"--pool_size must be positive, got {self.pool_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not a multiple of --num_heads {self.num_heads}")
        if not self.timesteps:
            raise ValueError("--timesteps needs at least one noise level")

    def extractor(self, image_size: int | None = None, device: str | torch.device = "cpu"):
        """The U-Net read at every block the head needs (DifFeed's fed-back blocks included)."""
        return load_feature_extractor(
            self.unet, self.blocks, self.timesteps, self.noise_seed, self.noise_draws, image_size, device
        )

    def head_model(self, extractor: DiffusionFeatureExtractor, labels: list[str], seed: int = 0) -> DiffusionHeadModel:
        """A new head for these blocks and timesteps (``extractor`` must read them), classifying into
        ``labels``, attached to ``extractor``, its weights drawn from ``seed``."""
        config_class, model_class = HEADS[self.head]
        blocks = sorted((extractor.block(name) for name in set(self.blocks)), key=lambda block: block.ordinal)
        settings = dict(
            unet=self.unet, blocks=[b.name for b in blocks], timesteps=list(self.timesteps),
            block_channels=[b.channels for b in blocks], block_grids=[list(b.grid) for b in blocks],
            image_size=extractor.image_size, noise_seed=self.noise_seed, noise_draws=self.noise_draws,
            id2label=dict(enumerate(labels)), label2id={name: k for k, name in enumerate(labels)},
        )  # fmt: skip
        if self.head != "linear":
            settings.update(hidden_size=self.hidden_size, num_layers=self.num_layers, num_heads=self.num_heads)
        if self.pool_size:
            settings["pool_size"] = self.pool_size
        if self.head == "diffeed":
            pairs = extractor.skip_pairs()
            fed = self.feedback_blocks or [name for name in pairs if ".resnets." in name]
            for name in fed:
                if name not in pairs:
                    raise ValueError(f"--feedback_blocks {name!r} has no skip connection to feed back along")
            settings.update(
                feedback_blocks=fed,
                feedback_targets=[pairs[name] for name in fed],
                feedback_channels=[extractor.block(name).channels for name in fed],
                target_channels=[extractor.block(pairs[name]).channels for name in fed],
            )
        torch.manual_seed(seed)
        model = model_class(config_class(**settings))
        model.attach(extractor)
        return model


@dataclass
class LabelledDataArguments:
    """A labelled image dataset: ``shapes:N`` (one-object scenes, the shape kind) or a folder or Hub id."""

    dataset_name: str = field(default="shapes:1000", metadata={"help": "shapes:N, or a folder or Hub id"})
    image_column: str = "image"
    label_column: str = "label"
    eval_split: str = field(default="test", metadata={"help": "the split to score (else 20% of train)"})
    image_size: int | None = field(default=None, metadata={"help": "default: the U-Net's"})
    extraction_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.dataset_name.startswith("shapes:"):
            count = self.dataset_name.split(":", 1)[1]
            if not count.isdigit() or int(count) < 2:
                raise ValueError(f"{self.dataset_name!r}: shapes:N needs at least 2 scenes, got {count!r}")
        elif names_a_folder(self.dataset_name) and not local_path(self.dataset_name).exists():
            raise ValueError(f"dataset folder {self.dataset_name!r} does not exist")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"--image_size must be at least 8 pixels, got {self.image_size}")

    def splits(self) -> tuple[Dataset, Dataset, list[str]]:
        """Train and evaluation sets with ``image`` and ``label`` columns, and the label names."""
        if self.dataset_name.startswith("shapes:"):
            scenes = shapes_probe_splits(int(self.dataset_name.split(":", 1)[1]), max_objects=1)

            def lone_kind(split: Dataset) -> Dataset:  # one object per scene: its kind is the label
                return split.select_columns(["image"]).add_column("label", [kinds[0] for kinds in split["labels"]])

            names = scenes["train"].features["labels"].feature.names
            return lone_kind(scenes["train"]), lone_kind(scenes["test"]), list(names)
        data = load_dataset(self.dataset_name)
        first = data[next(iter(data))]
        for column in (self.image_column, self.label_column):
            if column not in first.column_names:
                raise ValueError(f"dataset {self.dataset_name} has no column {column!r}: {first.column_names}")
        if self.eval_split in data and "train" in data:
            train, test = data["train"], data[self.eval_split]
        else:
            split = data.get("train", first).train_test_split(test_size=0.2, seed=0)
            train, test = split["train"], split["test"]
        feature = train.features[self.label_column]
        names = (
            feature.names if isinstance(feature, ClassLabel) else sorted({str(v) for v in train[self.label_column]})
        )
        to_id = None if isinstance(feature, ClassLabel) else {name: k for k, name in enumerate(names)}

        def tidy(dataset: Dataset) -> Dataset:
            dataset = dataset.select_columns([self.image_column, self.label_column])
            dataset = dataset.rename_columns({self.image_column: "image", self.label_column: "label"})
            if to_id is not None:
                dataset = dataset.map(lambda row: {"label": to_id[str(row["label"])]})
            return dataset

        return tidy(train), tidy(test), list(names)


def pixel_batch(images, size: int) -> torch.Tensor:
    """PIL images to ``(B, 3, size, size)`` in [0, 1]."""
    arrays = [np.asarray(image.convert("RGB").resize((size, size)), dtype=np.float32) / 255 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


class ImageCollator:
    """Rows with ``image`` and ``label`` to ``pixel_values`` and ``labels`` (DifFeed reads images)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, rows: list[dict]) -> dict:
        return {
            "pixel_values": pixel_batch([row["image"] for row in rows], self.size),
            "labels": torch.tensor([row["label"] for row in rows]),
        }


class FeatureSet(torch.utils.data.Dataset):
    """Cached features: item i is ``{"features": [tensor per key], "labels": label}``."""

    def __init__(self, features: list[torch.Tensor], labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"features": [f[index] for f in self.features], "labels": self.labels[index]}


def collate_features(items: list[dict]) -> dict:
    return {
        "features": [torch.stack(parts) for parts in zip(*(item["features"] for item in items))],
        "labels": torch.stack([torch.as_tensor(item["labels"]) for item in items]),
    }


@torch.no_grad()
def cache_features(
    extractor: DiffusionFeatureExtractor, dataset: Dataset, keys, batch_size: int = 64, pool: int | None = None
) -> FeatureSet:
    """The features ``keys`` of every image of ``dataset``, once (the U-Net is frozen and the noise fixed),
    average-pooled to ``pool`` x ``pool`` when given (a linear probe pools so; caching pooled saves memory)."""
    parts: dict = {key: [] for key in keys}
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=ImageCollator(extractor.image_size))
    labels = []
    for batch in loader:
        features = extractor(batch["pixel_values"])
        for key in keys:
            value = features[key].float()
            if pool:
                value = torch.nn.functional.adaptive_avg_pool2d(value, pool)
            parts[key].append(value.cpu())
        labels.append(batch["labels"])
    return FeatureSet([torch.cat(parts[key]) for key in keys], torch.cat(labels))


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def head_trainer(
    head: DiffusionHeadModel, train, evaluation, training_args: TrainingArguments, image_size: int
) -> FreeATMTrainer:
    """A ``Trainer`` for ``head`` (free-atm's: it keeps the model card the script writes): on cached
    ``FeatureSet``s (linear, DifFormer) or images (DifFeed)."""
    training_args.remove_unused_columns = False
    cached = isinstance(train, FeatureSet)
    return FreeATMTrainer(
        model=head,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collate_features if cached else ImageCollator(image_size),
        compute_metrics=accuracy,
    )
