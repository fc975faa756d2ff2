"""The arguments of BLIP pretraining with position prompts and the model, tokenizer, data and
``PositionPromptTrainer`` they describe: shared by ``trainers/train_blip.py``, the benchmarks and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AutoTokenizer, BlipImageProcessor, BlipProcessor, TrainingArguments

from ...paths import local_path
from ...usage import names_a_folder
from ..arguments import DataArguments
from ..collate import ObjectMapCollator
from ..sources import COLUMNS
from ..views import MaskConsistentViews
from .evaluation import RetrievalCallback, positional_retrieval_set
from .model import BlipForPretraining, blip_config
from .prompts import check_prompt_mode, position_prompt
from .tokenizer import train_caption_tokenizer
from .trainer import PositionPromptTrainer

#: the training columns of vision-language pretraining: the shared ones and the captions
TEXT_COLUMNS = (*COLUMNS, "prompt")


@dataclass
class BlipModelArguments:
    """The BLIP to pretrain: a checkpoint (with its tokenizer), or a small new one (with a tokenizer
    learned from the captions)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "a BLIP folder or Hub id to start from, e.g. Salesforce/blip-itm-base-coco (default: new)"},
    )
    hidden_size: int = field(default=192, metadata={"help": "width of a new model's vision and text transformers"})
    num_layers: int = 4
    num_heads: int = 3
    patch_size: int = 8
    image_text_hidden_size: int = field(default=128, metadata={"help": "ITC embedding size of a new model"})
    vocab_size: int = field(default=2000, metadata={"help": "WordPiece vocabulary learned for a new model"})
    max_length: int = field(default=64, metadata={"help": "caption tokens, prompts included"})
    itc_queue_size: int | None = field(
        default=None,
        metadata={"help": "BLIP's momentum encoder and queues of this many ITC features (0: none; default: the "
                  "checkpoint's, else 0)"},
    )  # fmt: skip
    itc_momentum: float | None = field(default=None, metadata={"help": "of the momentum encoder (default 0.995)"})
    itc_alpha: float | None = field(
        default=None, metadata={"help": "momentum distillation weight, reached after one epoch (default 0.4)"}
    )

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "patch_size", "image_text_hidden_size", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.itc_queue_size is not None and self.itc_queue_size < 0:
            raise ValueError(f"--itc_queue_size must be 0 (no momentum encoder) or more, got {self.itc_queue_size}")
        for name in ("itc_momentum", "itc_alpha"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden_size {self.hidden_size} is not a multiple of --num_heads {self.num_heads}")
        path = self.model_name_or_path
        if path and names_a_folder(path) and not (local_path(path) / "config.json").is_file():
            raise ValueError(f"--model_name_or_path {path} is not a model folder (no config.json)")


@dataclass
class BlipDataArguments(DataArguments):
    """The training data (:class:`DataArguments`, with captions) and the position prompts."""

    position_prompts: str = field(
        default="all", metadata={"help": "all (the paper), one (a random object per caption, as PTP) or none"}
    )
    grid: int = field(default=3, metadata={"help": "the image is cut into grid x grid blocks, numbered from 1"})
    crop_scale: float = field(default=0.5, metadata={"help": "least area share of the random resized crop"})
    retrieval_scenes: int = field(
        default=0, metadata={"help": "held-out scenes for retrieval, captions saying where objects are (0: none)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_prompt_mode(self.position_prompts)
        if self.probe_scenes:
            raise ValueError(
                f"--probe_scenes {self.probe_scenes}: BLIP pretraining is measured by --retrieval_scenes, not probes"
            )
        if self.retrieval_scenes < 0:
            raise ValueError(f"--retrieval_scenes must be 0 (none) or more, got {self.retrieval_scenes}")
        if self.grid < 1:
            raise ValueError(f"--grid must be at least 1, got {self.grid}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"--crop_scale must lie in (0, 1], got {self.crop_scale}")


def caption_tokenizer(model_args: BlipModelArguments, data_args: BlipDataArguments, data):
    """The checkpoint's tokenizer, or one made from the captions and every prompt they can get."""
    if model_args.model_name_or_path:
        return AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    names = sorted({name for objects in data["objects"] for name in objects})
    prompts = [position_prompt(name, block) for name in names for block in range(1, data_args.grid**2 + 1)]
    return train_caption_tokenizer([*data["prompt"], *prompts], model_args.vocab_size, model_args.max_length)


def blip_trainer(
    model_args: BlipModelArguments, data_args: BlipDataArguments, training_args: TrainingArguments
) -> PositionPromptTrainer:
    """A ``PositionPromptTrainer`` for these arguments, a new model drawn from ``training_args.seed``; the
    image processor (``BlipImageProcessor``, CLIP's mean and std) goes with the tokenizer into the saved
    folders; retrieval on held-out scenes (:class:`RetrievalCallback`) when ``retrieval_scenes`` is set."""
    training_args.remove_unused_columns = False
    data = data_args.training_data(TEXT_COLUMNS)
    tokenizer = caption_tokenizer(model_args, data_args, data)
    torch.manual_seed(training_args.seed)
    names = ("itc_queue_size", "itc_momentum", "itc_alpha")
    itc = {name: getattr(model_args, name) for name in names if getattr(model_args, name) is not None}
    if model_args.model_name_or_path:
        model, loading = BlipForPretraining.from_pretrained(
            model_args.model_name_or_path, output_loading_info=True, **itc
        )
        if any(key.split(".")[0].endswith("_m") for key in loading["missing_keys"]):
            model.reset_momentum()  # a checkpoint without a momentum encoder: start it as a copy
        size = model.config.vision_config.image_size
        if size != data_args.image_size:
            raise ValueError(
                f"--model_name_or_path {model_args.model_name_or_path} takes {size}-pixel images, "
                f"not --image_size {data_args.image_size}"
            )
    else:
        config = blip_config(
            tokenizer,
            data_args.image_size,
            model_args.patch_size,
            model_args.hidden_size,
            model_args.num_layers,
            model_args.num_heads,
            model_args.image_text_hidden_size,
            **itc,
        )
        model = BlipForPretraining(config)
    processor = BlipImageProcessor(size={"height": data_args.image_size, "width": data_args.image_size})
    callbacks = []
    if data_args.retrieval_scenes:
        scenes = positional_retrieval_set(data_args.retrieval_scenes, size=data_args.image_size, grid=data_args.grid)
        callbacks.append(RetrievalCallback(scenes, BlipProcessor(processor, tokenizer)))
    views = MaskConsistentViews(
        data_args.image_size, scale=(data_args.crop_scale, 1.0), color_strength=0.0, grayscale=0.0, blur=0.0
    )
    return PositionPromptTrainer(
        model=model,
        args=training_args,
        train_dataset=data,
        data_collator=ObjectMapCollator(data_args.image_size, data_args.max_objects, data_args.skip_bad_rows),
        processing_class=tokenizer,
        views=views,
        prompts=data_args.position_prompts,
        grid=data_args.grid,
        image_processor=processor,
        callbacks=callbacks,
    )
