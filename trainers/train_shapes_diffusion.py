"""Train the default text-to-image model on the shapes world and save it as a diffusers pipeline folder.

    python trainers/train_shapes_diffusion.py --output_dir outputs/shapes-model \
        --export_dir free_atm/models/shapes/default_model

Two stages, each checkpointed every ``--checkpoint_every`` steps and resumed by rerunning the command (a
rerun that changes more than the settings in ``RESUMABLE_CHANGES`` is refused, naming what differs):

* an ``AutoencoderKL`` (64 px to 16 x 16 x 8), trained with an L1 loss that weighs cells holding an
  object more (``--vae_object_weight``), under bf16 autocast (``--vae_mixed_precision``);
* the ``UNet2DConditionModel`` and the ``CLIPTextModel`` together on cached latents, with caption dropout
  for classifier-free guidance, an EMA of the UNet, min-SNR loss weighting (``--snr_gamma``), and a token
  grounding loss on the scenes' exact masks (``--grounding_weight``, see :mod:`free_atm.models.shapes.grounding`),
  optionally its pixel term (``--pixel_weight``, :func:`pixel_grounding_loss`).
  Every ``--eval_every`` steps the EMA weights draw the probe's held-out captions
  (:mod:`free_atm.evaluation.probe`); the judge's breakdown is printed and added to the curve
  ``OUTPUT_DIR/probe.jsonl``, and whenever its prompt fidelity is the best so far the EMA weights are saved
  as a float16 pipeline in ``--candidate_dir`` with ``candidate.json`` (step and breakdown); the candidate
  folder keeps a copy of the curve, which a run ``--init_from`` it begins with.

``--max_minutes`` stops a run cleanly (checkpoint saved) so it can go on later, and a checkpoint is also
written every ``--checkpoint_minutes``; ``--init_from`` starts the UNet stage from an exported pipeline when
the checkpoints are gone (another machine or session), or with ``--fresh_unet`` keeps only its VAE; a
candidate folder starts it at the candidate's step of the schedule. On a GPU add
``--unet_mixed_precision bf16 --render_workers 14``.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.training_utils import EMAModel
from transformers import CLIPTextModel, CLIPTokenizer

from free_atm import CaptureConfig, FreeATMDiffusionPipeline
from free_atm.data.lock import writer_lock
from free_atm.evaluation.fidelity import SIZE_LIMITS
from free_atm.evaluation.judge import shape_classifier
from free_atm.evaluation.probe import (
    CURVE_FILE,
    append_to_curve,
    probe_breakdown,
    probe_scenes,
    read_curve,
    write_curve,
)
from free_atm.models.shapes.architecture import (
    inference_scheduler,
    shapes_text_encoder,
    shapes_tokenizer,
    shapes_unet,
    shapes_vae,
    training_scheduler,
    with_self_attention,
)
from free_atm.models.shapes.denoising import boundary_weights, denoising_loss
from free_atm.models.shapes.grounding import GroundingAttnProcessor, grounding_loss, region_loss_from_shares
from free_atm.paths import local_path
from free_atm.run_settings import RUN_SETTINGS, check_folder_kind, check_run_settings, record_run_settings
from free_atm.seeds import derive_seed
from free_atm.tokens import object_token_weights
from free_atm.training.arguments import ScriptArgumentParser
from free_atm.training.grounding import pixel_loss
from free_atm.training.health import FiniteWatch
from free_atm.training.stopping import StopSignals
from free_atm.usage import run_reporting_bad_input
from free_atm.world import render_scene

#: when this process started: the trainer reports its startup time (scenes, tokens, models) against it
PROCESS_STARTED = time.time()


@dataclass
class ShapesTrainingArguments:
    output_dir: str = field(default="outputs/shapes-model", metadata={"help": "checkpoints and caches"})
    export_dir: str | None = field(default=None, metadata={"help": "pipeline folder (default OUTPUT_DIR/pipeline)"})
    num_scenes: int = 20000
    seed: int = 0
    render_workers: int = field(default=1, metadata={"help": "processes that render the training scenes"})
    vae_steps: int = 3000
    vae_batch_size: int = 16
    vae_learning_rate: float = 1e-3
    vae_object_weight: float = field(
        default=4.0, metadata={"help": "extra weight of the reconstruction error in cells that hold an object"}
    )
    vae_mixed_precision: str = field(
        default="bf16", metadata={"help": "no or bf16 (autocast; 1.6x faster VAE steps on an AVX-512 CPU)"}
    )
    unet_steps: int = 7500
    unet_block_out_channels: list[int] = field(
        default_factory=lambda: [48, 96, 96], metadata={"help": "the UNet's widths per scale (a new UNet only)"}
    )
    unet_self_attention: bool = field(
        default=False,
        metadata={
            "help": "self-attention before each cross-attention; with --init_from a UNet without it, that UNet "
            "gains it (zero-initialised, in place of its first text attention)"
        },
    )
    unet_mixed_precision: str = field(
        default="no", metadata={"help": "no or bf16 (autocast; pays on a GPU, 1.7x slower UNet steps on a CPU)"}
    )
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    grounding_weight: float = field(
        default=0.05, metadata={"help": "weight of the token grounding loss on the exact masks (0: plain diffusion)"}
    )
    pixel_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the pixel grounding loss: each object's normalised cross-attention map, all layers "
            "averaged, shaped like its mask (what the raw masks are cut from; 0: off)"
        },
    )
    region_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the region loss: each self-attention position attends within its own object or "
            "background (what refinement along the self-attention needs; 0: off)"
        },
    )
    grounding_max_timestep: int = field(
        default=1000,
        metadata={"help": "ground only the steps at or below this noise level (1000: every step)"},
    )
    snr_gamma: float = field(
        default=5.0, metadata={"help": "min-SNR loss weighting (Hang et al., 2023) with this gamma; 0 turns it off"}
    )
    prediction_type: str = field(default="epsilon", metadata={"help": "epsilon or v_prediction"})
    edge_weight: float = field(
        default=0.0,
        metadata={
            "help": "extra weight of the denoising error in latent cells on an object's edge (corners, tips; "
            "a half-covered cell weighs 1 + this; 0: every cell alike)"
        },
    )
    curriculum_steps: int = field(
        default=0,
        metadata={"help": "the first this many UNet steps draw only one-object scenes whose object is large"},
    )
    eval_every: int = field(
        default=2500, metadata={"help": "run the probe on the EMA weights every this many UNet steps (0: never)"}
    )
    probe_captions: int = field(
        default=192, metadata={"help": "the probe's one-object captions, and as many of two or three objects"}
    )
    candidate_dir: str | None = field(
        default=None,
        metadata={"help": "where the best-probed EMA weights go as a float16 pipeline (default OUTPUT_DIR/candidate)"},
    )
    checkpoint_every: int = 500
    checkpoint_minutes: float = field(
        default=15.0, metadata={"help": "also checkpoint when this many minutes passed since the last checkpoint"}
    )
    max_minutes: float = math.inf
    fit_steps_to_time: bool = field(
        default=False,
        metadata={
            "help": "with --max_minutes: once the step rate is known, set --unet_steps to what fits in the time "
            "left, so the learning-rate schedule ends and the pipeline is exported within the budget"
        },
    )
    plain_step: bool = field(
        default=False,
        metadata={
            "help": "the reference training step: a for-loop AdamW and EMA, and no CUDA graph (the default step "
            "uses the fused AdamW, a multi-tensor EMA and, on a GPU, a compiled step replayed as a CUDA graph)"
        },
    )
    export_dtype: str = field(default="float32", metadata={"help": "dtype of the exported weights"})
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "an exported pipeline folder: its VAE is kept and its UNet and text encoder start the UNet "
            "stage (how training goes on where the checkpoints of an earlier run are gone)"
        },
    )

    fresh_unet: bool = field(
        default=False,
        metadata={"help": "with --init_from: keep only its VAE and train a new UNet and text encoder"},
    )

    def __post_init__(self) -> None:
        """Bad settings fail here, before anything is rendered or written."""
        counts = ("num_scenes", "render_workers", "vae_steps", "vae_batch_size", "unet_steps", "batch_size")
        rates = ("vae_learning_rate", "learning_rate")
        for name in (*counts, "checkpoint_every", "checkpoint_minutes", "probe_captions", "max_minutes", *rates):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        nonnegative = (
            "warmup_steps",
            "eval_every",
            "grounding_weight",
            "pixel_weight",
            "region_weight",
            "grounding_max_timestep",
            "snr_gamma",
            "edge_weight",
            "curriculum_steps",
        )
        for name in (*nonnegative, "vae_object_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be 0 or more, got {getattr(self, name)}")
        for name in (*nonnegative, "vae_object_weight", *rates, "checkpoint_minutes"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"--{name} must be a finite number, got {getattr(self, name)}")
        for name in ("caption_dropout", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must lie in [0, 1), got {getattr(self, name)}")
        choices = {
            "prediction_type": ("epsilon", "v_prediction"),
            "vae_mixed_precision": ("no", "bf16"),
            "unet_mixed_precision": ("no", "bf16"),
            "export_dtype": ("float32", "float16", "bfloat16"),
        }
        for name, accepted in choices.items():
            if getattr(self, name) not in accepted:
                raise ValueError(f"--{name} must be one of {', '.join(accepted)}, got {getattr(self, name)!r}")
        widths = self.unet_block_out_channels
        if len(widths) != 3 or any(width < 16 or width % 16 for width in widths):
            raise ValueError(f"--unet_block_out_channels must be 3 multiples of 16 (norm groups), got {widths}")
        if self.fit_steps_to_time and math.isinf(self.max_minutes):
            raise ValueError("--fit_steps_to_time needs --max_minutes")
        if self.init_from and not (Path(self.init_from) / "model_index.json").is_file():
            raise ValueError(f"--init_from {self.init_from} is not an exported pipeline folder (no model_index.json)")


#: settings a rerun may change and still resume the run in ``--output_dir`` (how long, how often, where to)
RESUMABLE_CHANGES = (
    "unet_steps",
    "max_minutes",
    "fit_steps_to_time",
    "plain_step",
    "eval_every",
    "probe_captions",
    "candidate_dir",
    "checkpoint_every",
    "checkpoint_minutes",
    "render_workers",
    "export_dir",
    "export_dtype",
)


@dataclass
class TrainingScenes:
    """The rendered training set: images ``(N, 64, 64, 3)``, captions, object phrases, and each object's
    visible area per latent cell ``(N, 3, 16, 16)`` (the targets of the grounding loss)."""

    images: np.ndarray
    captions: list[str]
    objects: list[list[str]]
    masks: np.ndarray


def scenes(args: ShapesTrainingArguments, cache: Path) -> TrainingScenes:
    """The training scenes, rendered once and cached."""
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        objects = [str(o).split("|") for o in data["objects"]]
        return TrainingScenes(data["images"], [str(c) for c in data["captions"]], objects, data["masks"])
    seeds = [derive_seed(args.seed, i) for i in range(args.num_scenes)]
    with ProcessPoolExecutor(args.render_workers) as pool:
        rendered = list(pool.map(render_scene, seeds, chunksize=512))
    masks = np.zeros((len(rendered), 3, 16, 16), np.float16)
    for i, scene in enumerate(rendered):  # 64 px to 16 x 16 cells of 4 x 4 pixels
        masks[i, : len(scene.objects)] = scene.masks.reshape(-1, 16, 4, 16, 4).mean((2, 4))
    training = TrainingScenes(
        np.stack([s.image for s in rendered]), [s.caption for s in rendered], [s.objects for s in rendered], masks
    )
    objects = np.array(["|".join(o) for o in training.objects])
    with open(cache.with_suffix(".tmp"), "wb") as file:  # np.savez would add ".npz" to a ".tmp" name
        np.savez(file, images=training.images, captions=np.array(training.captions), objects=objects, masks=masks)
    cache.with_suffix(".tmp").replace(cache)
    return training


def caption_tokens(training: TrainingScenes, tokenizer, cache: Path) -> dict[str, torch.Tensor]:
    """Per scene, the caption's token ids and the grounding loss's inputs: the token weights of each
    object phrase ``(N, L, 3)``, which of the 3 slots hold an object, and the masks. Cached beside the
    scenes: tokenising 100,000 captions and weighing their phrases takes about 20 s."""
    if cache.exists():
        return torch.load(cache)
    ids = tokenizer(
        training.captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    weights = object_token_weights([(tokenizer, training.captions)], training.objects, tokenizer.model_max_length)
    tokens = {
        "ids": ids,
        "masks": torch.from_numpy(training.masks),
        "token_weights": weights.half(),
        "valid": weights.sum(1) > 0,
    }
    torch.save(tokens, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)  # a run killed while saving leaves no half-written cache
    return tokens


def to_pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class Checkpoint:
    """A stage's modules, optimizer and step in one file, written atomically, and only while every loss
    :meth:`observe` saw and every weight is finite (else :class:`free_atm.training.health.TrainingDiverged`,
    leaving the last finite checkpoint in place)."""

    def __init__(self, path: Path, **state):
        self.path, self.state, self.watch = path, state, FiniteWatch()

    def observe(self, loss: torch.Tensor, step: int) -> None:
        self.watch.observe(loss, step)

    def check(self, step: int) -> None:
        """Raise ``TrainingDiverged`` if a loss so far or a weight of the stage's modules is not finite."""
        modules = [m for m in self.state.values() if isinstance(m, torch.nn.Module)]

        def where() -> str:  # made only when the stage diverged
            kept = (
                f"{self.path} holds the last finite checkpoint" if self.path.exists() else "no checkpoint was written"
            )
            return f"{kept}; lower the learning rate or the loss weights and start again in a new --output_dir"

        self.watch.check((p for m in modules for p in m.parameters()), step, where)

    def load(self) -> int:
        if not self.path.exists():
            return 0
        saved = torch.load(self.path, map_location="cpu", weights_only=False)
        for name, obj in self.state.items():
            obj.load_state_dict(saved[name])
        return saved["step"]

    def save(self, step: int) -> None:
        self.check(step)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"step": step, **{k: v.state_dict() for k, v in self.state.items()}}, tmp)
        tmp.replace(self.path)


class RandomState:
    """A stage's numpy generator (which scenes) and torch's generators (which noise), saved with its
    checkpoint, so that a run killed and rerun draws exactly what the uninterrupted run would have."""

    def __init__(self, seed: int) -> None:
        self.numpy = np.random.default_rng(seed)
        torch.manual_seed(seed)

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"numpy": self.numpy.bit_generator.state, "torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state: dict) -> None:
        self.numpy.bit_generator.state = state["numpy"]
        torch.set_rng_state(state["torch"])
        if state["cuda"]:
            torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device, mixed_precision: str):
    """bf16 autocast on ``device``, or nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")


def train_vae(args, training: TrainingScenes, device, out: Path, deadline: float, stop: StopSignals):
    vae = shapes_vae().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.vae_steps))
    )
    random = RandomState(args.seed)
    checkpoint = Checkpoint(out / "vae.ckpt", vae=vae, optimizer=optimizer, schedule=schedule, random=random)
    step = checkpoint.load()
    while step < args.vae_steps and time.time() < deadline and stop.received is None:
        index = random.numpy.integers(0, len(training.images), args.vae_batch_size)
        batch = to_pixels(training.images[index], device)
        # cells holding an object weigh more: the textured background, which no 4x4 cell can encode
        # exactly, would otherwise take the capacity that the shapes' corners and tips need
        objects = (torch.from_numpy(training.masks[index]).to(device).float().sum(1, keepdim=True) > 0).float()
        weights = 1 + args.vae_object_weight * F.interpolate(objects, scale_factor=4, mode="nearest")
        with autocast(device, args.vae_mixed_precision):
            posterior = vae.encode(batch).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample
        # L1 keeps the edges that tell a star from a blob; MSE alone blurs them
        error = (weights * (reconstruction.float() - batch).abs()).mean() / weights.mean()
        loss = error + 1e-6 * posterior.kl().mean()
        checkpoint.observe(loss, step + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        if step % 100 == 0:
            checkpoint.check(step)
            print(json.dumps({"stage": "vae", "step": step, "loss": round(loss.item(), 5)}), flush=True)
        if step % args.checkpoint_every == 0:
            checkpoint.save(step)
    checkpoint.save(step)
    report_stop(stop, f"at VAE step {step}, with its checkpoint")
    return vae.eval(), step >= args.vae_steps


@torch.no_grad()
def encode_latents(vae, images, device, cache: Path, stop: StopSignals) -> torch.Tensor | None:
    """The training scenes' latents, encoded once and cached; ``None`` when a signal asked to stop before the
    last batch (encoding 20,000 scenes takes minutes on one thread), and then nothing is cached."""
    if cache.exists():
        return torch.load(cache)
    batches = []
    for i in range(0, len(images), 256):
        if stop.received is not None:
            return None
        batches.append(vae.encode(to_pixels(images[i : i + 256], device)).latent_dist.mode().cpu())
    latents = torch.cat(batches)
    torch.save(latents, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)  # a run killed while saving leaves no half-written cache
    return latents


class FidelityProbe:
    """Draws the probe's held-out captions (:func:`free_atm.evaluation.probe.probe_scenes`) with the current
    weights, adds the judge's breakdown to the curve ``OUTPUT_DIR/probe.jsonl`` and, when its prompt
    fidelity beats every earlier probe of the run, saves the weights as the run's candidate.

    The candidate folder also holds a copy of the curve, rewritten at every probe, so that a run folder
    lost with its machine does not take the curve with it: a run started ``--init_from`` a candidate begins
    its curve with the candidate's, up to the candidate's step."""

    def __init__(self, args: ShapesTrainingArguments, vae, tokenizer, out: Path) -> None:
        self.args, self.vae, self.tokenizer, self.out = args, vae, tokenizer, out
        self.scenes = probe_scenes(args.probe_captions)
        self.classifier = shape_classifier()
        self.candidate = Path(args.candidate_dir or out / "candidate")
        inherited = Path(args.init_from or "") / CURVE_FILE
        if args.init_from and inherited.is_file() and not (out / CURVE_FILE).exists():
            start = candidate_step(args)
            write_curve(out / CURVE_FILE, [line for line in read_curve(inherited) if line["step"] <= start])

    @torch.no_grad()
    def __call__(self, unet, text_encoder, scaling: float, step: int) -> dict:
        training_processors = unet.attn_processors  # the grounding processors would keep every map
        unet.set_attn_processor(AttnProcessor())
        pipe = shapes_pipeline(self.vae, unet.eval(), text_encoder.eval(), self.tokenizer, scaling, self.args)
        pipe.set_progress_bar_config(disable=True)
        breakdown = probe_breakdown(pipe, self.scenes, self.classifier)
        if breakdown["prompt_fidelity"] > self.best():
            export_candidate(self.args, pipe, self.candidate, step, breakdown)
        unet.set_attn_processor(training_processors)
        append_to_curve(self.out / CURVE_FILE, step, breakdown)
        if self.candidate.is_dir():
            shutil.copyfile(self.out / CURVE_FILE, self.candidate / CURVE_FILE)
        return breakdown

    def best(self) -> float:
        """The prompt fidelity of the saved candidate (-1 when there is none)."""
        saved = self.candidate / CANDIDATE_RECORD
        return json.loads(saved.read_text())["probe"]["prompt_fidelity"] if saved.is_file() else -1.0


#: the file beside a candidate's pipeline that holds its step and probe breakdown
CANDIDATE_RECORD = "candidate.json"


def export_candidate(args, pipe, folder: Path, step: int, breakdown: dict) -> None:
    """Save a float16 copy of ``pipe`` (the training modules stay as they are) into ``folder`` with its
    ``step`` and probe ``breakdown``; the record is written last, so a folder without it is incomplete."""
    (folder / CANDIDATE_RECORD).unlink(missing_ok=True)
    components = {name: copy.deepcopy(module).cpu() for name, module in pipe.components.items() if name in MODULES}
    half = replace(args, export_dtype="float16")
    export(half, components["vae"], components["unet"], components["text_encoder"], pipe.tokenizer, None, folder)
    (folder / CANDIDATE_RECORD).write_text(json.dumps({"step": step, "probe": breakdown}, indent=2))


#: the trained modules of a shapes pipeline
MODULES = ("vae", "unet", "text_encoder")


def candidate_step(args: ShapesTrainingArguments) -> int:
    """The schedule step ``--init_from`` starts at: a candidate's step, else 0."""
    record = Path(args.init_from or "") / CANDIDATE_RECORD
    return json.loads(record.read_text())["step"] if args.init_from and record.is_file() else 0


def unet_modules(args: ShapesTrainingArguments, device: torch.device):
    """The UNet, text encoder and tokenizer the UNet stage starts from: new ones, or ``--init_from``'s."""
    if args.init_from and not args.fresh_unet:
        tokenizer = CLIPTokenizer.from_pretrained(args.init_from, subfolder="tokenizer")
        unet = UNet2DConditionModel.from_pretrained(args.init_from, subfolder="unet")
        if args.unet_self_attention and unet.config.only_cross_attention:
            unet = with_self_attention(unet)
        # transformers loads a checkpoint in its saved dtype, and a candidate is saved in float16: training is float32
        text_encoder = CLIPTextModel.from_pretrained(args.init_from, subfolder="text_encoder", dtype=torch.float32)
    else:
        tokenizer = shapes_tokenizer()
        unet = shapes_unet(args.unet_block_out_channels, args.unet_self_attention)
        text_encoder = shapes_text_encoder(tokenizer)
    text_encoder.get_input_embeddings().requires_grad_(False)  # fixed word codes: see shapes_text_encoder
    return unet.to(device), text_encoder.to(device), tokenizer


class StepLosses(torch.nn.Module):
    """The forward half of a UNet-stage step: the denoising loss and the grounding losses of one batch.

    Tensors in, tensors out, so that on a GPU it compiles into one graph replayed as a CUDA
    graph: the probabilities the grounding processors keep live and die inside one call.
    """

    def __init__(self, unet, text_encoder, noise_scheduler, args: ShapesTrainingArguments, device) -> None:
        super().__init__()
        self.unet, self.text_encoder, self.noise_scheduler, self.args = unet, text_encoder, noise_scheduler, args
        self.device = device
        self.attention: list[torch.Tensor] = []
        self.self_attention: list | None = [] if args.region_weight else None
        self.processor = GroundingAttnProcessor(self.attention, self.self_attention)
        if args.grounding_weight or args.pixel_weight or args.region_weight:
            unet.set_attn_processor(self.processor)

    def forward(
        self,
        noisy: torch.Tensor,
        clean: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor,
        token_weights: torch.Tensor,
        masks: torch.Tensor,
        valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``noisy`` latents of ``clean`` ones at ``timesteps``, captions ``tokens``; the grounding loss's
        inputs as in :func:`grounding_loss` (``masks`` also give the cells that ``--edge_weight`` weighs).
        Returns the denoising, token grounding, pixel grounding and region losses."""
        self.attention.clear()
        if self.self_attention is not None:
            self.self_attention.clear()
            self.processor.set_regions(masks, valid)
        with autocast(self.device, self.args.unet_mixed_precision):
            states = self.text_encoder(tokens).last_hidden_state
            prediction = self.unet(noisy, timesteps, states).sample
        cells = boundary_weights(masks, self.args.edge_weight) if self.args.edge_weight else None
        denoising = denoising_loss(
            self.noise_scheduler, prediction.float(), clean, noise, timesteps, self.args.snr_gamma, cells
        )
        grounding = torch.zeros((), device=denoising.device)
        if self.args.grounding_weight:
            grounding = grounding_loss(self.attention, token_weights, masks, valid)
        pixel = torch.zeros((), device=denoising.device)
        if self.args.pixel_weight:
            pixel = pixel_grounding_loss(self.attention, token_weights, masks, valid)
        region = torch.zeros((), device=denoising.device)
        if self.self_attention is not None:
            region = region_loss_from_shares(self.self_attention)
            self.self_attention.clear()
            self.processor.set_regions(None, None)
        self.attention.clear()
        return denoising, grounding, pixel, region


def pixel_grounding_loss(
    probabilities: list[torch.Tensor], token_weights: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """The pixel grounding loss (:func:`free_atm.training.grounding.pixel_loss`) on the maps the cross-attention
    layers keep (:func:`grounding_loss`'s arguments): each layer's head-averaged map of every token,
    upsampled bilinearly to the finest layer's grid as the capture averages layers, the tokens of each valid
    object summed, against the object's mask."""
    batch = token_weights.shape[0]
    side = max(math.isqrt(probs.shape[1]) for probs in probabilities)
    layers = []
    for probs in probabilities:
        maps = probs.view(batch, -1, *probs.shape[1:]).float().mean(1).transpose(1, 2)  # (B, L, N)
        grid = math.isqrt(maps.shape[-1])
        maps = maps.reshape(batch, -1, grid, grid)
        layers.append(F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False))
    counted = (token_weights > 0) & valid[:, None, :]  # (B, L, M)
    owners = torch.where(counted.any(-1), counted.float().argmax(-1), -1)
    return pixel_loss(torch.stack(layers, 2), masks, owners)


def fitted_steps(step: int, steps_done: int, elapsed: float, deadline: float) -> int:
    """The step count that ends within ``deadline`` at the rate of the ``steps_done`` steps of ``elapsed``
    seconds so far, keeping a tenth of the time left (and 20 s) for the probes and the export."""
    left = deadline - time.time()
    return step + max(1, int(steps_done / elapsed * (0.9 * left - 20)))


def train_unet(args, vae, latents, training: TrainingScenes, device, out: Path, deadline: float, stop: StopSignals):
    unet, text_encoder, tokenizer = unet_modules(args, device)
    noise_scheduler = training_scheduler(args.prediction_type)
    losses = StepLosses(unet, text_encoder, noise_scheduler, args, device)
    fast = not args.plain_step
    step_losses = torch.compile(losses, mode="reduce-overhead") if fast and device.type == "cuda" else losses
    inputs = {name: t.to(device) for name, t in caption_tokens(training, tokenizer, out / "tokens.pt").items()}
    ema = EMAModel(unet.parameters(), decay=args.ema_decay, foreach=fast)
    params = [p for p in (*unet.parameters(), *text_encoder.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-2, fused=fast)
    start = candidate_step(args)
    for group in optimizer.param_groups:
        group["initial_lr"] = args.learning_rate
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1 - start) / args.warmup_steps if args.warmup_steps else 1.0)
            * 0.5
            * (1 + math.cos(math.pi * min(s, args.unet_steps) / args.unet_steps))
        ),
        last_epoch=start - 1,  # a candidate's run goes on at its step of the cosine, after a new warm-up
    )
    random = RandomState(args.seed + 10_000 + start)
    checkpoint = Checkpoint(
        out / "unet.ckpt",
        unet=unet,
        text_encoder=text_encoder,
        ema=ema,
        optimizer=optimizer,
        schedule=schedule,
        random=random,
    )
    step = checkpoint.load() or start
    ema.to(device)  # a checkpoint's EMA weights load on the CPU
    evaluate = FidelityProbe(args, vae, tokenizer, out) if args.eval_every else None
    curriculum = curriculum_scenes(training) if args.curriculum_steps else None
    if curriculum is not None and not len(curriculum):
        raise ValueError(f"--curriculum_steps: none of the {len(training.objects)} scenes holds one large object")
    empty = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    empty = empty.input_ids.to(device)
    scaling = 1.0 / latents.std().item()
    latents = latents.to(device)
    unet.train()
    text_encoder.train()
    first_step, started = step, time.time()
    last_checkpoint = started
    print(
        json.dumps({"stage": "unet", "step": step, "startup_seconds": round(started - PROCESS_STARTED, 1)}), flush=True
    )
    while step < args.unet_steps and time.time() < deadline and stop.received is None:
        pool = curriculum if curriculum is not None and step < args.curriculum_steps else None
        drawn = random.numpy.integers(0, len(latents) if pool is None else len(pool), args.batch_size)
        index = torch.from_numpy(drawn if pool is None else pool[drawn]).to(device)
        dropped = torch.from_numpy(random.numpy.random(args.batch_size) < args.caption_dropout).to(device)
        clean = latents[index] * scaling
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch_size,), device=device)
        grounded = inputs["valid"][index] & ~dropped[:, None] & (timesteps <= args.grounding_max_timestep)[:, None]
        denoising, grounding, pixel, region = step_losses(
            noisy=noise_scheduler.add_noise(clean, noise, timesteps),
            clean=clean,
            noise=noise,
            timesteps=timesteps,
            tokens=torch.where(dropped[:, None], empty, inputs["ids"][index]),  # no host sync, unlike a mask index
            token_weights=inputs["token_weights"][index].float(),
            masks=inputs["masks"][index].float(),
            valid=grounded,
        )
        loss = denoising + args.grounding_weight * grounding + args.pixel_weight * pixel + args.region_weight * region
        checkpoint.observe(loss, step + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.step(unet.parameters())
        step += 1
        if args.fit_steps_to_time and step == first_step + 50:
            args.unet_steps = fitted_steps(step, step - first_step, time.time() - started, deadline)
            print(json.dumps({"stage": "unet", "step": step, "fitted_unet_steps": args.unet_steps}), flush=True)
        if step % 100 == 0:
            checkpoint.check(step)
            print(
                json.dumps(
                    {
                        "stage": "unet",
                        "step": step,
                        "loss": round(denoising.item(), 5),
                        "grounding": round(grounding.item(), 4),
                        "pixel": round(pixel.item(), 4),
                        "region": round(region.item(), 4),
                        "lr": schedule.get_last_lr()[0],
                        "seconds": round(time.time() - started),
                    }
                ),
                flush=True,
            )
        if step % args.checkpoint_every == 0 or time.time() - last_checkpoint >= 60 * args.checkpoint_minutes:
            checkpoint.save(step)
            last_checkpoint = time.time()
        if evaluate and step % args.eval_every == 0:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
            breakdown = evaluate(unet, text_encoder, scaling, step)
            print(json.dumps({"stage": "eval", "step": step, **breakdown}), flush=True)
            ema.restore(unet.parameters())
            unet.train()
            text_encoder.train()
    checkpoint.save(step)
    report_stop(stop, f"at UNet step {step}, with its checkpoint")
    ema.copy_to(unet.parameters())
    unet.set_attn_processor(AttnProcessor2_0())
    done = step >= args.unet_steps or args.fit_steps_to_time  # a fitted run exports at its deadline
    return unet.eval(), text_encoder.eval(), tokenizer, scaling, done


def curriculum_scenes(training: TrainingScenes) -> np.ndarray:
    """The indices of the one-object scenes whose object is large (a visible area of at least the
    judge's "large" limit): what ``--curriculum_steps`` draws from first."""
    areas = training.masks[:, 0].astype(np.float32).sum((1, 2)) * 16  # cells of 4 x 4 pixels
    single = np.array([len(objects) == 1 for objects in training.objects])
    return np.flatnonzero(single & (areas >= SIZE_LIMITS["medium"]))


def shapes_pipeline(vae, unet, text_encoder, tokenizer, scaling: float | None, args) -> FreeATMDiffusionPipeline:
    """The modules as a pipeline; ``scaling`` (the latents' scaling factor) is set on the VAE if given."""
    if scaling is not None:
        vae.register_to_config(scaling_factor=scaling)
    return FreeATMDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=inference_scheduler(args.prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        capture_config=CaptureConfig(),
    )


def export(args, vae, unet, text_encoder, tokenizer, scaling: float | None, export_dir: Path) -> None:
    pipe = shapes_pipeline(vae, unet, text_encoder, tokenizer, scaling, args)
    pipe.to(getattr(torch, args.export_dtype)).save_pretrained(export_dir)
    (export_dir / "training_args.json").write_text(
        json.dumps({k: v for k, v in asdict(args).items() if k != "max_minutes"}, indent=2)
    )


def main() -> None:
    (args,) = ScriptArgumentParser(ShapesTrainingArguments).parse_args_into_dataclasses()
    out = local_path(args.output_dir)
    with writer_lock(out, "training run", "--output_dir"):
        check_folder_kind(out, RUN_SETTINGS, "--output_dir")
        for option, folder in (("--export_dir", args.export_dir), ("--candidate_dir", args.candidate_dir)):
            if folder:  # pipelines are written there: an earlier pipeline may be replaced, nothing else
                check_folder_kind(local_path(folder), "model_index.json", option)
        check_run_settings(out, asdict(args), may_change=RESUMABLE_CHANGES)
        record_run_settings(out, asdict(args))
        train(args, out)


def train(args: ShapesTrainingArguments, out: Path) -> None:
    """Both stages into ``out``, from where an earlier run of the same settings stopped; then the export.
    SIGINT or SIGTERM during a stage ends it after the current step, with its checkpoint at that step."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    deadline = time.time() + 60 * args.max_minutes
    torch.manual_seed(args.seed)
    training = scenes(args, out / "scenes.npz")
    with StopSignals("train_shapes_diffusion.py") as stop:
        if args.init_from:
            vae, vae_done = AutoencoderKL.from_pretrained(args.init_from, subfolder="vae").to(device).eval(), True
        else:
            vae, vae_done = train_vae(args, training, device, out, deadline, stop)
        if not vae_done:
            print("stopped during the VAE stage; rerun to resume")
            return
        latents = encode_latents(vae, training.images, device, out / "latents.pt", stop)
        if latents is None:
            report_stop(stop, "while encoding the training scenes' latents")
        unet, text_encoder, tokenizer, scaling, done = train_unet(
            args, vae, latents, training, device, out, deadline, stop
        )
    if not done:
        print("stopped during the UNet stage; rerun to resume")
        return
    export_dir = Path(args.export_dir or out / "pipeline")
    export(args, vae.cpu(), unet.cpu(), text_encoder.cpu(), tokenizer, scaling, export_dir)
    print(f"saved the pipeline to {export_dir}")


def report_stop(stop: StopSignals, where: str) -> None:
    """If a signal stopped the run (after a stage's last checkpoint, or while encoding), say ``where`` in one
    line and exit with the signal's status."""
    if stop.received is None:
        return
    print(
        f"train_shapes_diffusion.py: stopped by {stop.received.name} {where}; rerun the same command to go on from it",
        file=sys.stderr,
    )
    raise SystemExit(stop.exit_status)


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_shapes_diffusion.py")
