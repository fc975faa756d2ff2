"""Sharded, resumable generation of a masked dataset, in one process or many (``accelerate``/``torchrun``).

Each process takes every ``world_size``-th shard; each sample's prompt and initial noise depend only on
``(seed, index)``, so the dataset does not depend on the number of processes. Finished shards are
skipped on a rerun, so a crash costs only the shards that were being generated.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..attention import CaptureConfig
from ..data.background import BackgroundShardWriter
from ..data.lock import writer_lock
from ..data.schema import encode_sample, sample_features
from ..data.shards import ShardPlan
from ..diffusion.images import MAX_SIDE
from ..diffusion.sampling import SCHEDULERS, TIMESTEP_SPACINGS, SamplingConfig
from ..paths import local_path
from ..prompts import ObjectPrompt, read_prompt_file
from ..run_settings import DATASET_RECORD, check_folder_kind, check_run_settings
from ..seeds import derive_seed
from ..usage import check_writable_folder
from .confidence_filter import check_min_confidence, filter_sample

#: shard names carry 5-digit numbers (``train-00000-of-00042``), and resuming checks every shard
MAX_SHARDS = 99_999
#: with ``--min-confidence``, the most images drawn per row a shard holds before the run stops and says so
MAX_DRAWS_PER_ROW = 20
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


#: the sampling settings a generation may override besides ``steps``; ``None`` keeps the pipeline's saved one
SAMPLING_FIELDS = ("guidance_scale", "scheduler", "timestep_spacing", "guidance_rescale")
#: what a generation samples with when neither the command nor the model says
FALLBACK_SAMPLING = {"num_inference_steps": 25, "guidance_scale": 5.0}

#: the capture settings a generation may override; ``None`` keeps the pipeline's saved setting
CAPTURE_FIELDS = (
    "threshold_method",
    "threshold",
    "largest_component",
    "layer_scales",
    "blocks",
    "timestep_range",
    "attention_resolution",
    "refinement",
    "refinement_power",
    "refinement_scales",
    "pixel_refinement",
)


@dataclass
class GenerationConfig:
    """What ``free-atm generate`` makes; everything but ``push_to_hub`` and ``out`` (a folder may be moved)
    must match on a resumed run, the capture settings included (they decide the masks)."""

    model: str = field(default="shapes", metadata={"help": "'shapes' (shipped), 'tiny-random', a folder or Hub id"})
    num_images: int = field(default=16, metadata={"help": "how many images (samples) the dataset holds"})
    out: str = field(default="outputs/dataset", metadata={"help": "the dataset folder; rerun to resume it"})
    batch_size: int = field(default=8, metadata={"help": "images per pipeline call (per process)"})
    steps: int | None = field(
        default=None,
        metadata={"help": "denoising steps per image, at most 1,000 (default: the model's saved setting, else 25)"},
    )
    seed: int = field(default=0, metadata={"help": "with a sample's index, decides its prompt and noise"})
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": "classifier-free guidance in [0, 100], 1 or less: none "
            "(default: the model's saved setting, else 5)"
        },
    )
    scheduler: str | None = field(
        default=None,
        metadata={"help": f"{', '.join(SCHEDULERS)} (default: the model's saved setting, else its own scheduler)"},
    )
    timestep_spacing: str | None = field(
        default=None, metadata={"help": f"where the steps fall: {', '.join(TIMESTEP_SPACINGS)} (default: the model's)"}
    )
    guidance_rescale: float | None = field(
        default=None, metadata={"help": "guidance rescale in [0, 1] (default: the model's saved setting, else none)"}
    )
    height: int | None = field(
        default=None, metadata={"help": "image height, a multiple of 8 up to 4,096 (default: model's)"}
    )
    width: int | None = field(
        default=None, metadata={"help": "image width, a multiple of 8 up to 4,096 (default: model's)"}
    )
    shard_size: int = field(default=256, metadata={"help": "samples per Parquet shard (the unit of resuming)"})
    dtype: str | None = field(
        default=None, metadata={"help": "float32, float16 or bfloat16 weights (default: float32)"}
    )
    prompts: str | None = field(default=None, metadata={"help": "a .txt, .jsonl or .csv prompt file"})
    push_to_hub: str | None = field(default=None, metadata={"help": "dataset repo id to upload the folder to"})
    lora: str | None = field(
        default=None,
        metadata={
            "help": "a LoRA adapter folder or Hub id loaded into the model (a grounding adapter sharpens the "
            "masks; needs peft, the train extra)"
        },
    )
    lora_scale: float = field(default=1.0, metadata={"help": "the adapter's weight, 0 to 4"})
    threshold_method: str | None = field(
        default=None,
        metadata={"help": "masks: fixed, otsu, or competition (objects and a background level compete per pixel)"},
    )
    threshold: float | None = field(
        default=None, metadata={"help": "masks: the fixed threshold in [0, 1], and competition's background level"}
    )
    largest_component: bool | None = field(
        default=None, metadata={"help": "masks: keep only the largest connected component of each mask"}
    )
    layer_scales: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "UNets: the layers that count, by downsampling factor from the latent (e.g. 2 4)"},
    )
    blocks: tuple[int, ...] | None = field(
        default=None, metadata={"help": "SD3/Flux: the indices of the attention blocks that count"}
    )
    timestep_range: tuple[float, float] | None = field(
        default=None, metadata={"help": "the window LOW HIGH of timesteps whose maps count (0 = clean image)"}
    )
    attention_resolution: int | None = field(
        default=None,
        metadata={"help": "height of the aggregated attention maps, at most 1,024 (default: the latent's)"},
    )
    refinement: str | None = field(
        default=None,
        metadata={"help": "none, or self_attention (maps propagated along the model's own self-attention)"},
    )
    refinement_power: int | None = field(
        default=None, metadata={"help": "how many times the self-attention is applied, 1 to 64"}
    )
    refinement_scales: tuple[int, ...] | None = field(
        default=None,
        metadata={
            "help": "the self-attention layers that count, by downsampling factor (default: <= 1,024 positions)"
        },
    )
    pixel_refinement: int | None = field(
        default=None,
        metadata={"help": "iterations of pixel-adaptive refinement along the image's colours, 0 (off) to 100"},
    )
    min_confidence: float = field(
        default=0.0,
        metadata={
            "help": "keep only rows whose every mask has at least this confidence in [0, 1], drawing more "
            "images until --num-images rows are kept (0: keep every row)"
        },
    )
    drop_objects: bool = field(
        default=False, metadata={"help": "with --min-confidence: drop the objects below it, not their rows"}
    )

    def resumable_fields(self) -> dict[str, Any]:
        """The settings a resumed run must match: every field but the upload target, and the prompt
        file's content (a file edited in place keeps its path)."""
        fields_ = {k: v for k, v in asdict(self).items() if k != "push_to_hub"}
        if self.prompts:
            stat = Path(self.prompts).stat()
            fields_["prompts_sha256"] = _file_sha256(self.prompts, stat.st_size, stat.st_mtime_ns)
        return fields_

    def sampling_overrides(self) -> dict[str, Any]:
        """The sampling settings given: they override the pipeline's saved ``sampling_config``."""
        given = {"num_inference_steps": self.steps, **{k: getattr(self, k) for k in SAMPLING_FIELDS}}
        return {k: v for k, v in given.items() if v is not None}

    def capture_overrides(self) -> dict[str, Any]:
        """The capture settings given: they override the pipeline's saved ``capture_config``."""
        return {k: getattr(self, k) for k in CAPTURE_FIELDS if getattr(self, k) is not None}

    def validate(self) -> None:
        """Check every setting that can be checked without a model; ``ValueError`` naming the bad value."""
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        from ..models import check_lora_reference, check_model_reference

        for name in ("num_images", "batch_size", "steps", "shard_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {self.seed}")
        check_min_confidence(self.min_confidence)
        scale = self.guidance_scale
        if scale is not None and not (math.isfinite(scale) and 0 <= scale <= 100):
            raise ValueError(f"--guidance-scale must lie in [0, 100] (1 or less turns guidance off), got {scale}")
        try:
            SamplingConfig.from_dict(self.sampling_overrides())
        except ValueError as error:
            raise ValueError(f"bad sampling setting: {error}") from None
        for name in ("height", "width"):
            size = getattr(self, name)
            if size is not None and (size <= 0 or size % 8):
                raise ValueError(f"--{name} must be a positive multiple of 8 (the VAE's downsampling), got {size}")
            if size is not None and size > MAX_SIDE:
                raise ValueError(f"--{name} must be at most {MAX_SIDE} pixels, got {size}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        shards = -(-self.num_images // self.shard_size)
        if shards > MAX_SHARDS:
            raise ValueError(
                f"--num-images {self.num_images} makes {shards:,} shards of {self.shard_size} samples; a dataset "
                f"holds at most {MAX_SHARDS:,} shards (raise --shard-size or lower --num-images)"
            )
        CaptureConfig.check_overrides(self.capture_overrides())
        check_writable_folder(self.out, "--out")
        check_model_reference(self.model)
        check_lora_reference(self.lora, self.lora_scale)
        if self.push_to_hub:
            try:
                validate_repo_id(self.push_to_hub)
            except HFValidationError:
                raise ValueError(f"--push-to-hub {self.push_to_hub!r} is not a Hub repo id (owner/name)") from None


@lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """The SHA-256 of a file, read once per version of it (a run checks and records its settings four
    times; a prompt file may hold millions of prompts)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PromptSource:
    """The prompt of every sample index: a prompt file (cycled), else the model's own prompts (the shapes
    world's captions for the shipped model, the ImageNet templates for any other)."""

    def __init__(self, config: GenerationConfig):
        from ..models import named_model

        self.config = config
        self.model = named_model(config.model)
        self.file_prompts = read_prompt_file(config.prompts, self.model.vocabulary()) if config.prompts else None

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
        return self.model.prompt(self.config.seed, index)


def sampling_in_effect(pipe, config: GenerationConfig) -> SamplingConfig:
    """The sampling settings a generation uses: those given, else the pipeline's saved ones, else
    :data:`FALLBACK_SAMPLING`. Applies a scheduler or spacing to ``pipe``."""
    saved = pipe.sampling_config
    fallback = {k: v for k, v in FALLBACK_SAMPLING.items() if getattr(saved, k) is None}
    pipe.set_sampling_config(SamplingConfig(**fallback).updated(config.sampling_overrides()))
    return pipe.sampling_config


def shard_batches(
    pipe, config: GenerationConfig, prompts: PromptSource, indices: Sequence[int]
) -> Iterator[list[dict]]:
    """Generate the samples ``indices`` in batches; yield each batch's samples (pipeline outputs, unencoded).
    Sampling follows ``pipe``'s sampling settings (:func:`sampling_in_effect` has applied the command's)."""
    default_height, default_width = pipe.default_image_size
    height, width = config.height or default_height, config.width or default_width
    for start in range(0, len(indices), config.batch_size):
        batch = indices[start : start + config.batch_size]
        batch_prompts = [prompts(i) for i in batch]
        seeds = [derive_seed(config.seed, i) for i in batch]
        out = pipe(
            batch_prompts,
            objects=[p.objects for p in batch_prompts],
            height=height,
            width=width,
            latents=pipe.initial_latents(seeds, height, width),
            capture_config=config.capture_overrides(),
        )
        yield [
            dict(
                image=out.images[k],
                prompt=str(prompt),
                objects=out.objects[k],
                masks=out.masks[k],
                attention_maps=out.attention_maps[k],
                boxes=out.boxes[k],
                confidence=out.confidence[k],
                seed=seed,
            )
            for k, (prompt, seed) in enumerate(zip(batch_prompts, seeds))
        ]


def candidate_indices(plan: ShardPlan, shard: int) -> Iterator[int]:
    """The sample indices ``shard`` draws from: its own, then (when ``--min-confidence`` drops some) the
    extra indices ``num_samples + k * num_shards + shard``, ``k = 0, 1, ...``: no two shards share one, and
    none depends on the number of processes."""
    yield from plan.indices(shard)
    for k in itertools.count():
        yield plan.num_samples + k * plan.num_shards + shard


def shard_samples(
    pipe, config: GenerationConfig, prompts: PromptSource, plan: ShardPlan, shard: int, progress
) -> tuple[list[dict], dict[str, int]]:
    """The samples of ``shard``: its indices' samples, those below ``config.min_confidence`` replaced by the
    next candidates (:func:`candidate_indices`) until the shard is full; and a record of what was dropped.
    Raises ``ValueError`` when :data:`MAX_DRAWS_PER_ROW` draws per row do not fill it."""
    wanted = len(plan.indices(shard))
    candidates = candidate_indices(plan, shard)
    kept, record = [], {"draws": 0, "dropped_rows": 0, "dropped_objects": 0}
    while len(kept) < wanted:
        if record["draws"] >= MAX_DRAWS_PER_ROW * wanted:
            raise ValueError(
                f"--min-confidence {config.min_confidence}: {record['draws']:,} images drawn for shard {shard} "
                f"and only {len(kept)} of its {wanted} rows reach it; lower --min-confidence"
            )
        # as many candidates as rows are missing (one batch at most): nothing is drawn to be thrown away
        indices = list(itertools.islice(candidates, min(config.batch_size, wanted - len(kept))))
        for batch in shard_batches(pipe, config, prompts, indices):
            record["draws"] += len(batch)
            for sample in batch:
                sample, dropped = filter_sample(sample, config.min_confidence, config.drop_objects)
                if sample is None:
                    record["dropped_rows"] += 1
                else:
                    kept.append(sample)
                    record["dropped_objects"] += dropped
                    progress.update(1)
    return kept, record


def check_output_folder(
    root: Path, config: GenerationConfig, capture: CaptureConfig | None = None, sampling: SamplingConfig | None = None
) -> None:
    """``root`` must be absent, empty, or a dataset started with the same settings (a resumed run); with
    ``capture`` and ``sampling`` (the settings the loaded pipeline will use), its recorded ones must match too."""
    check_folder_kind(root, DATASET_RECORD, "--out")
    settings = config.resumable_fields()
    if capture is not None:
        settings |= {"capture_config": capture.to_dict(), "sampling_config": sampling.to_dict()}
    free = ["out"] + (["capture_config", "sampling_config"] if capture is None else [])  # a moved folder resumes
    check_run_settings(root, settings, free, record=DATASET_RECORD, option="--out", holds="a dataset generated")


def recorded_settings(config: GenerationConfig, capture: CaptureConfig, sampling: SamplingConfig) -> dict[str, Any]:
    """What ``generation_config.json`` holds: the settings given, and the capture and sampling settings in
    effect."""
    return {**config.resumable_fields(), "capture_config": capture.to_dict(), "sampling_config": sampling.to_dict()}


def generate_dataset(config: GenerationConfig, pipe=None) -> Path:
    """Generate the missing shards of ``config.out`` with this process's share; return the folder.

    Under several processes every process must call it; the dataset card is written (and pushed) by the
    main process once all shards exist.
    """
    state = PartialState(cpu=not torch.cuda.is_available())
    config.validate()  # everything that needs no model, before loading one; nothing is written yet
    # one run writes a folder at a time: the main process holds the lock from before the settings check
    with writer_lock(config.out) if state.is_main_process else nullcontext():
        return _generate(config, state, pipe)


def _generate(config: GenerationConfig, state: PartialState, pipe) -> Path:
    from ..models import load_lora, load_pipeline

    root = local_path(config.out)
    prompts = PromptSource(config)
    check_output_folder(root, config)
    if config.push_to_hub and state.is_main_process:
        from ..data.hub import check_push_access

        check_push_access(config.push_to_hub)
    plan = ShardPlan(config.num_images, config.shard_size)

    pipe = pipe or load_pipeline(config.model, state.device, DTYPES.get(config.dtype))
    if config.lora:
        load_lora(pipe, config.lora, config.lora_scale)
    prompts.check(pipe)
    capture = pipe.capture_config.updated(config.capture_overrides())
    sampling = sampling_in_effect(pipe, config)
    check_output_folder(root, config, capture, sampling)  # the model's own saved settings must match too
    if state.is_main_process:  # the folder becomes a dataset only once every check has passed
        root.mkdir(parents=True, exist_ok=True)
        (root / DATASET_RECORD).write_text(json.dumps(recorded_settings(config, capture, sampling), indent=2))
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
            samples, record = shard_samples(pipe, config, prompts, plan, shard, progress)
            plan.write_record(root, shard, record)  # before the shard: a shard with its final name has its record
            writer.submit(samples, plan.path(root, shard))
    finally:
        progress.close()
        writer.close()
    state.wait_for_everyone()
    if state.is_main_process:
        finish_dataset(root, plan, recorded_settings(config, capture, sampling), features, config.push_to_hub)
    state.wait_for_everyone()
    return root


def finish_dataset(
    root: Path,
    plan: ShardPlan,
    settings: dict[str, Any],
    features,
    push_to_hub: str | None = None,
) -> None:
    """Check every shard (each holding all its rows but those its record says it lacks), then write the
    sample grid and the dataset card (``settings`` as the config it shows; the counts of the shards' records,
    such as the rows dropped below ``--min-confidence``, summed beside its own), and push when asked."""
    import pyarrow.parquet as pq

    from ..data.card import render_dataset_card
    from ..visualize import dataset_grid

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
    for shard in range(plan.num_shards):
        for name, value in plan.record(root, shard).items():
            if isinstance(value, int):
                counts[name] = counts.get(name, 0) + value
    first_rows = pq.read_table(shards[0]).slice(0, 8).to_pylist()
    dataset_grid([features.decode_example(row) for row in first_rows]).save(root / "sample_grid.png")
    card = render_dataset_card(root, features, settings, counts, repo_or_path=push_to_hub)
    card.save(root / "README.md")
    if push_to_hub:
        from ..data.hub import push_dataset

        push_dataset(root, push_to_hub)
