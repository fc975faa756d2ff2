"""``GroundingArguments`` and what they describe: the base pipeline with its adapter, the masked images it
trains on, and the ``GroundingTrainer`` (``trainers/train_grounding_lora.py``, the benchmarks, the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Image as ImageFeature
from PIL import Image
from torch import nn

from ...data.schema import check_row
from ..arguments import DataArguments
from ..trainer import FreeATMTrainer
from .adapter import adapter_targets, add_grounding_adapter, load_grounding_adapter_weights, save_grounding_adapter
from .step import grounding_losses
from .validation import annotate_miou

#: what an adapter trains on: images with their captions, object phrases and object masks
COLUMNS = ("image", "prompt", "objects", "masks")


@dataclass
class GroundingArguments(DataArguments):
    """The data (:class:`DataArguments`: a free-atm dataset, generated or annotated, or ``shapes:N``), the
    base model, the adapter and the losses."""

    pretrained_model_name_or_path: str = field(
        default="shapes", metadata={"help": "the base pipeline: 'shapes' (shipped), 'tiny-random', a folder or Hub id"}
    )
    rank: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: the rank)"})
    blocks: list[int] | None = field(
        default=None,
        metadata={"help": "indices of the attention layers to adapt (default: every one the capture reads)"},
    )
    grounding_weight: float = field(default=1.0, metadata={"help": "weight of the token grounding loss"})
    pixel_weight: float = field(default=1.0, metadata={"help": "weight of the pixel grounding loss"})
    denoising_weight: float = field(default=1.0, metadata={"help": "weight of the denoiser's own loss"})
    min_timestep: int = field(default=0, metadata={"help": "lowest noise level drawn, 0-1000"})
    max_timestep: int = field(default=1000, metadata={"help": "highest noise level drawn (exclusive), 0-1000"})
    max_sequence_length: int | None = field(
        default=None, metadata={"help": "SD3 and Flux: the T5 text length, as in the pipeline call (default: its own)"}
    )
    validation_images: int = field(
        default=0,
        metadata={"help": "the data's last N rows, held out: annotate mean IoU on them before and after, in the card"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size % 16:
            raise ValueError(
                f"--image_size must be a multiple of 16 (every family's latent grid), got {self.image_size}"
            )
        if self.rank < 1:
            raise ValueError(f"--rank must be at least 1, got {self.rank}")
        for name in ("alpha", "grounding_weight", "pixel_weight", "denoising_weight"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"--{name} must be a finite number, 0 or more, got {value}")
        if self.validation_images < 0:
            raise ValueError(f"--validation_images must be 0 or more, got {self.validation_images}")
        if self.max_sequence_length is not None and not 0 <= self.max_sequence_length <= 512:
            raise ValueError(f"--max_sequence_length must be in [0, 512], got {self.max_sequence_length}")
        if not 0 <= self.min_timestep < self.max_timestep <= 1000:
            raise ValueError(
                f"--min_timestep {self.min_timestep} and --max_timestep {self.max_timestep} must satisfy "
                "0 <= min < max <= 1000"
            )

    def call(self) -> dict:
        """The pipeline call's text settings these arguments fix (SD3 and Flux: ``max_sequence_length``)."""
        return {} if self.max_sequence_length is None else {"max_sequence_length": self.max_sequence_length}


class GroundingCollator:
    """Rows to a batch at ``image_size`` square: ``pixel_values`` ``(B, 3, S, S)`` in [-1, 1], ``masks``
    ``(B, M, S, S)`` (zero where an image has fewer objects), and the ``prompts`` and ``objects``."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, rows: list[dict]) -> dict:
        size = (self.image_size, self.image_size)
        for row in rows:
            check_row(row, row.get("row", "?"))
        width = max(len(row["objects"]) for row in rows)
        pixels = torch.stack(
            [torch.from_numpy(np.array(row["image"].convert("RGB").resize(size, Image.BICUBIC))) for row in rows]
        )
        masks = torch.zeros(len(rows), width, *size)
        for b, row in enumerate(rows):
            for m, mask in enumerate(row["masks"]):
                masks[b, m] = torch.from_numpy(np.array(mask.convert("L").resize(size, Image.NEAREST)) > 127)
        return {
            "pixel_values": pixels.permute(0, 3, 1, 2).float() / 127.5 - 1,
            "masks": masks,
            "prompts": [row["prompt"] for row in rows],
            "objects": [list(row["objects"]) for row in rows],
        }


@dataclass
class GroundingOutput:
    """The weighted loss a step minimises, and its parts (detached, for the logs)."""

    loss: torch.Tensor
    denoising: torch.Tensor
    grounding: torch.Tensor
    pixel: torch.Tensor


class GroundingModel(nn.Module):
    """The pipeline's modules as one ``nn.Module`` for the ``Trainer`` (which moves and saves them): its
    forward draws each image's noise level in ``[min_timestep, max_timestep)`` and its noise from torch's
    generator (so a resumed run draws what the uninterrupted one would) and returns the weighted losses of
    :func:`grounding_losses`."""

    def __init__(self, pipe, args: GroundingArguments) -> None:
        super().__init__()
        # registered so that the Trainer moves them to its device; saving writes the adapter alone
        self.components = nn.ModuleDict({k: v for k, v in pipe.components.items() if isinstance(v, nn.Module)})
        self.pipe, self.args = pipe, args

    def forward(self, pixel_values, masks, prompts, objects) -> GroundingOutput:
        args = self.args
        timesteps = torch.randint(args.min_timestep, args.max_timestep, (len(prompts),)).float()
        losses = grounding_losses(self.pipe, pixel_values, prompts, objects, masks, timesteps, call=args.call())
        loss = (
            args.denoising_weight * losses.denoising
            + args.grounding_weight * losses.grounding
            + args.pixel_weight * losses.pixel
        )
        return GroundingOutput(loss, losses.denoising.detach(), losses.grounding.detach(), losses.pixel.detach())


class GroundingTrainer(FreeATMTrainer):
    """Trains the adapter alone; a checkpoint and the final folder hold the adapter in diffusers' LoRA
    format (not the base weights), and resuming puts it back into the same adapter. ``held_out`` rows, if
    any, are what :meth:`held_out_miou` scores."""

    def __init__(self, *args, held_out=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.held_out = held_out

    def held_out_miou(self) -> float | None:
        """The pipeline's raw ``annotate`` mean IoU on the held-out rows as it is now (None without any)."""
        if not self.held_out:
            return None
        loader = torch.utils.data.DataLoader(
            self.held_out, batch_size=self.args.per_device_eval_batch_size, collate_fn=self.data_collator
        )
        return annotate_miou(self.model.pipe, loader, self.model.args.call(), seed=self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            self.accumulate(denoising=outputs.denoising, grounding=outputs.grounding, pixel=outputs.pixel)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        save_grounding_adapter(self.model.pipe, output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_grounding_adapter_weights((model or self.model).pipe, resume_from_checkpoint)


def grounding_trainer(args: GroundingArguments, training_args, pipe=None) -> GroundingTrainer:
    """A ``GroundingTrainer`` for ``args``: the base pipeline (``pipe``, else
    :func:`free_atm.models.load_pipeline` of ``args.pretrained_model_name_or_path``) with a fresh adapter
    drawn from ``training_args.seed``, on the masked images of ``args.dataset_name``."""
    from ...models import denoiser_skeleton, load_pipeline

    training_args.remove_unused_columns = False
    data = args.training_data(COLUMNS).cast_column("image", ImageFeature())
    if args.validation_images >= len(data):
        raise ValueError(
            f"--validation_images {args.validation_images} leaves nothing to train on: the data has {len(data)} rows"
        )
    train = data.select(range(len(data) - args.validation_images))
    held_out = data.select(range(len(train), len(data))) if args.validation_images else None
    if pipe is None and args.blocks is not None:  # a block the model lacks is named before it loads
        adapter_targets(denoiser_skeleton(args.pretrained_model_name_or_path), args.blocks)
    pipe = pipe or load_pipeline(args.pretrained_model_name_or_path)
    torch.manual_seed(training_args.seed)
    add_grounding_adapter(pipe, args.rank, args.rank if args.alpha is None else args.alpha, args.blocks)
    return GroundingTrainer(
        model=GroundingModel(pipe, args),
        args=training_args,
        train_dataset=train,
        data_collator=GroundingCollator(args.image_size),
        held_out=held_out,
    )
