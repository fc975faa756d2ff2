"""Sharded, resumable generation of a masked dataset, in one process or many (``accelerate``/``torchrun``).

Each process takes every ``world_size``-th shard; each sample's prompt and initial noise depend only on
``(seed, index)``, so the dataset does not depend on the number of processes. Finished shards are
skipped on a rerun, so a crash costs only the shards that were being generated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..prompts import ObjectPrompt, object_vocabulary, read_prompt_file, template_prompt
from ..seeds import derive_seed
from .background import BackgroundShardWriter
from .features import encode_sample, sample_features
from .shards import ShardPlan

CONFIG_FILE = "generation_config.json"


@dataclass
class GenerationConfig:
    """What ``free-atm generate`` makes; everything but ``push_to_hub`` and ``out`` (a folder may be moved)
    must match on a resumed run."""

    model: str = field(default="shapes", metadata={"help": "'shapes' (shipped), 'tiny-random', a folder or Hub id"})
    num_images: int = 16
    out: str = "outputs/dataset"
    batch_size: int = 8
    steps: int = 25
    seed: int = 0
    guidance_scale: float = 5.0
    height: int | None = None
    width: int | None = None
    shard_size: int = 256
    prompts: str | None = field(default=None, metadata={"help": "a .txt, .jsonl or .csv prompt file"})
    push_to_hub: str | None = field(default=None, metadata={"help": "dataset repo id to upload the folder to"})

    def resumable_fields(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "push_to_hub"}

    def validate(self) -> None:
        """Check every setting that can be checked without a model; ``ValueError`` naming the bad value."""
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        from ..diffusion.loading import check_model_reference

        for name in ("num_images", "batch_size", "steps", "shard_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {self.seed}")
        if self.guidance_scale < 0:
            raise ValueError(
                f"--guidance-scale must be 0 or more (1 or less turns guidance off), got {self.guidance_scale}"
            )
        for name in ("height", "width"):
            size = getattr(self, name)
            if size is not None and (size <= 0 or size % 8):
                raise ValueError(f"--{name} must be a positive multiple of 8 (the VAE's downsampling), got {size}")
        check_model_reference(self.model)
        if self.push_to_hub:
            try:
                validate_repo_id(self.push_to_hub)
            except HFValidationError:
                raise ValueError(f"--push-to-hub {self.push_to_hub!r} is not a Hub repo id (owner/name)") from None


class PromptSource:
    """The prompt of every sample index: a prompt file (cycled), the shapes world's captions for the
    shapes model, else the ImageNet templates."""

    def __init__(self, config: GenerationConfig):
        self.config = config
        vocabulary = object_vocabulary(config.model) if config.prompts else None
        self.file_prompts = read_prompt_file(config.prompts, vocabulary) if config.prompts else None

    def check(self, pipe) -> None:
        """Check every prompt of the file against ``pipe``'s tokenizers (objects truncated away or split
        differently); the generated prompts are correct by construction."""
        for prompt in self.file_prompts or []:
            try:
                pipe.check_objects([prompt], [prompt.objects])
            except ValueError as error:
                raise ValueError(f"{prompt.origin}: {error}") from None

    def __call__(self, index: int) -> ObjectPrompt:
        if self.file_prompts is not None:
            return self.file_prompts[index % len(self.file_prompts)]
        if self.config.model == "shapes":
            from ..shapes import render_scene

            scene = render_scene(derive_seed(self.config.seed, index))
            return ObjectPrompt(scene.caption, scene.objects)
        return template_prompt(self.config.seed, index)


def shard_batches(pipe, config: GenerationConfig, prompts: PromptSource, indices: range) -> Iterator[list[dict]]:
    """Generate the samples ``indices`` in batches; yield each batch's samples (pipeline outputs, unencoded)."""
    default_height, default_width = pipe.default_image_size
    height, width = config.height or default_height, config.width or default_width
    for start in range(0, len(indices), config.batch_size):
        batch = indices[start : start + config.batch_size]
        batch_prompts = [prompts(i) for i in batch]
        seeds = [derive_seed(config.seed, i) for i in batch]
        out = pipe(
            batch_prompts,
            objects=[p.objects for p in batch_prompts],
            num_inference_steps=config.steps,
            guidance_scale=config.guidance_scale,
            height=height,
            width=width,
            latents=pipe.initial_latents(seeds, height, width),
        )
        yield [
            dict(
                image=out.images[k],
                prompt=str(prompt),
                objects=out.objects[k],
                masks=out.masks[k],
                attention_maps=out.attention_maps[k],
                boxes=out.boxes[k],
                seed=seed,
            )
            for k, (prompt, seed) in enumerate(zip(batch_prompts, seeds))
        ]


def check_output_folder(root: Path, config: GenerationConfig) -> None:
    """``root`` must be absent, empty, or a dataset started with the same settings (a resumed run)."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root} is a file, not a folder")
    if not root.is_dir() or not any(root.iterdir()):
        return
    path = root / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"--out {root} holds other files and no {CONFIG_FILE}; use an empty or new folder")
    recorded, wanted = json.loads(path.read_text()), config.resumable_fields()
    changed = sorted(k for k in wanted if k != "out" and recorded.get(k) != wanted[k])  # a moved folder resumes
    if changed:
        raise ValueError(
            f"{root} holds a dataset generated with other settings ({', '.join(changed)} differ); "
            "use the same settings to resume, or another --out"
        )


def generate_dataset(config: GenerationConfig, pipe=None) -> Path:
    """Generate the missing shards of ``config.out`` with this process's share; return the folder.

    Under several processes every process must call it; the dataset card is written (and pushed) by the
    main process once all shards exist.
    """
    from ..diffusion.loading import load_pipeline

    state = PartialState(cpu=not torch.cuda.is_available())
    root = Path(config.out)
    config.validate()  # everything that needs no model, before loading one; nothing is written yet
    prompts = PromptSource(config)
    check_output_folder(root, config)
    plan = ShardPlan(config.num_images, config.shard_size)

    pipe = pipe or load_pipeline(config.model, state.device)
    prompts.check(pipe)
    if state.is_main_process:  # the folder becomes a dataset only once every check has passed
        root.mkdir(parents=True, exist_ok=True)
        (root / CONFIG_FILE).write_text(json.dumps(config.resumable_fields(), indent=2))
    state.wait_for_everyone()
    todo = [
        s for s in plan.shards_of_process(state.process_index, state.num_processes) if not plan.is_complete(root, s)
    ]
    features = sample_features()
    writer = BackgroundShardWriter(features, encode_sample)
    progress = tqdm(
        total=sum(len(plan.indices(s)) for s in todo),
        unit="img",
        disable=not state.is_local_main_process,
        desc=f"generating {len(todo)} shards",
    )
    try:
        for shard in todo:
            samples = []
            for batch in shard_batches(pipe, config, prompts, plan.indices(shard)):
                samples += batch
                progress.update(len(batch))
            writer.submit(samples, plan.path(root, shard))
    finally:
        progress.close()
        writer.close()
    state.wait_for_everyone()
    if state.is_main_process:
        finish_dataset(root, plan, config, features)
    state.wait_for_everyone()
    return root


def finish_dataset(root: Path, plan: ShardPlan, config: GenerationConfig, features) -> None:
    """Check every shard, then write the sample grid and the dataset card, and push when asked."""
    import pyarrow.parquet as pq

    from ..visualize import dataset_grid
    from .card import render_dataset_card

    missing = [s for s in range(plan.num_shards) if not plan.is_complete(root, s)]
    if missing:
        raise RuntimeError(f"shards {missing} of {root} are missing or incomplete; rerun to finish them")
    shards = [plan.path(root, s) for s in range(plan.num_shards)]
    table = pq.read_table(shards, columns=["objects", "boxes"]).to_pydict()
    objects = [len(o) for o in table["objects"]]
    empty = sum(any(v is None or v != v for v in box) for boxes in table["boxes"] for box in boxes)
    counts = {
        "images": len(objects),
        "objects": int(sum(objects)),
        "objects_per_image": round(float(np.mean(objects)), 2),
        "empty_masks": int(empty),
        "shards": plan.num_shards,
    }
    first_rows = pq.read_table(shards[0]).slice(0, 8).to_pylist()
    dataset_grid([features.decode_example(row) for row in first_rows]).save(root / "sample_grid.png")
    card = render_dataset_card(root, features, config.resumable_fields(), counts, repo_or_path=config.push_to_hub)
    card.save(root / "README.md")
    if config.push_to_hub:
        from .hub import push_dataset

        push_dataset(root, config.push_to_hub)
