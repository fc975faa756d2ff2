"""Train the default text-to-image model on the shapes world and save it as a diffusers pipeline folder.

    python trainers/train_shapes_diffusion.py --output_dir outputs/shapes-model \
        --export_dir free_atm/models/shapes/default_model

Two stages, each checkpointed every ``--checkpoint_every`` steps and resumed by rerunning the command (a
rerun that changes more than the settings in ``RESUMABLE_CHANGES`` is refused, naming what differs):

* an ``AutoencoderKL`` (64 px to 16 x 16 x 8), trained with an L1 loss that weighs cells holding an
  object more (``--vae_object_weight``), under bf16 autocast (``--vae_mixed_precision``);
* the ``UNet2DConditionModel`` and the ``CLIPTextModel`` together on cached latents, with caption dropout
  for classifier-free guidance, an EMA of the UNet, min-SNR loss weighting (``--snr_gamma``), and a token
  grounding loss on the scenes' exact masks (``--grounding_weight``, see :mod:`free_atm.models.shapes.grounding`).
  Every ``--eval_every`` steps the EMA weights draw held-out captions and the judge's breakdown is printed
  (:mod:`free_atm.evaluation.fidelity`).

``--max_minutes`` stops a run cleanly (checkpoint saved) so it can go on later; ``--init_from`` starts the
UNet stage from an exported pipeline when the checkpoints are gone (another machine or session), or with
``--fresh_unet`` keeps only its VAE. On a GPU add ``--unet_mixed_precision bf16 --render_workers 14``.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.training_utils import EMAModel
from transformers import CLIPTextModel, CLIPTokenizer, HfArgumentParser

from free_atm import CaptureConfig, FreeATMDiffusionPipeline
from free_atm.evaluation.fidelity import draw_scenes, fidelity_breakdown, scenes_split
from free_atm.evaluation.judge import shape_classifier
from free_atm.models.shapes.architecture import (
    inference_scheduler,
    shapes_text_encoder,
    shapes_tokenizer,
    shapes_unet,
    shapes_vae,
    training_scheduler,
    with_self_attention,
)
from free_atm.models.shapes.denoising import denoising_loss
from free_atm.models.shapes.grounding import GroundingAttnProcessor, grounding_loss, region_loss
from free_atm.run_settings import check_run_settings, record_run_settings
from free_atm.seeds import derive_seed
from free_atm.tokens import object_token_weights
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
    eval_every: int = field(
        default=2500, metadata={"help": "judge EMA samples of held-out captions every this many UNet steps (0: never)"}
    )
    eval_images: int = 64
    checkpoint_every: int = 500
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
        rates = ("vae_learning_rate", "learning_rate", "max_minutes")
        for name in (*counts, "checkpoint_every", "eval_images", *rates):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        nonnegative = (
            "warmup_steps",
            "eval_every",
            "grounding_weight",
            "region_weight",
            "grounding_max_timestep",
            "snr_gamma",
        )
        for name in (*nonnegative, "vae_object_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be 0 or more, got {getattr(self, name)}")
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
    "eval_images",
    "checkpoint_every",
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
    """A stage's modules, optimizer and step in one file, written atomically."""

    def __init__(self, path: Path, **state):
        self.path, self.state = path, state

    def load(self) -> int:
        if not self.path.exists():
            return 0
        saved = torch.load(self.path, map_location="cpu", weights_only=False)
        for name, obj in self.state.items():
            obj.load_state_dict(saved[name])
        return saved["step"]

    def save(self, step: int) -> None:
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


def train_vae(args, training: TrainingScenes, device, out: Path, deadline: float):
    vae = shapes_vae().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.vae_learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.vae_steps))
    )
    random = RandomState(args.seed)
    checkpoint = Checkpoint(out / "vae.ckpt", vae=vae, optimizer=optimizer, schedule=schedule, random=random)
    step = checkpoint.load()
    while step < args.vae_steps and time.time() < deadline:
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
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        if step % 100 == 0:
            print(json.dumps({"stage": "vae", "step": step, "loss": round(loss.item(), 5)}), flush=True)
        if step % args.checkpoint_every == 0:
            checkpoint.save(step)
    checkpoint.save(step)
    return vae.eval(), step >= args.vae_steps


@torch.no_grad()
def encode_latents(vae, images, device, cache: Path) -> torch.Tensor:
    if cache.exists():
        return torch.load(cache)
    latents = torch.cat(
        [
            vae.encode(to_pixels(images[i : i + 256], device)).latent_dist.mode().cpu()
            for i in range(0, len(images), 256)
        ]
    )
    torch.save(latents, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)  # a run killed while saving leaves no half-written cache
    return latents


class FidelityProbe:
    """Draws ``eval_images`` held-out captions (scenes of seed 4000, disjoint from training and from the
    benchmark's splits) with the current weights and returns the judge's breakdown."""

    def __init__(self, args: ShapesTrainingArguments, vae, tokenizer) -> None:
        self.args, self.vae, self.tokenizer = args, vae, tokenizer
        self.scenes = scenes_split(4_000, args.eval_images)
        self.classifier = shape_classifier()

    @torch.no_grad()
    def __call__(self, unet, text_encoder, scaling: float) -> dict:
        training_processors = unet.attn_processors  # the grounding processors would keep every map
        unet.set_attn_processor(AttnProcessor())
        pipe = shapes_pipeline(self.vae, unet.eval(), text_encoder.eval(), self.tokenizer, scaling, self.args)
        pipe.set_progress_bar_config(disable=True)
        images, _ = draw_scenes(pipe, self.scenes, {"default": None}, batch_size=32)
        unet.set_attn_processor(training_processors)
        breakdown = fidelity_breakdown(images, self.scenes, self.classifier)
        return {k: v for k, v in breakdown.items() if k not in ("found_object_miou", "images")}


def unet_modules(args: ShapesTrainingArguments, device: torch.device):
    """The UNet, text encoder and tokenizer the UNet stage starts from: new ones, or ``--init_from``'s."""
    if args.init_from and not args.fresh_unet:
        tokenizer = CLIPTokenizer.from_pretrained(args.init_from, subfolder="tokenizer")
        unet = UNet2DConditionModel.from_pretrained(args.init_from, subfolder="unet")
        if args.unet_self_attention and unet.config.only_cross_attention:
            unet = with_self_attention(unet)
        text_encoder = CLIPTextModel.from_pretrained(args.init_from, subfolder="text_encoder")
    else:
        tokenizer = shapes_tokenizer()
        unet = shapes_unet(args.unet_block_out_channels, args.unet_self_attention)
        text_encoder = shapes_text_encoder(tokenizer)
    text_encoder.get_input_embeddings().requires_grad_(False)  # fixed word codes: see shapes_text_encoder
    return unet.to(device), text_encoder.to(device), tokenizer


class StepLosses(torch.nn.Module):
    """The forward half of a UNet-stage step: the denoising loss and the grounding loss of one batch.

    Tensors in, tensors out, so that on a GPU it compiles into one graph replayed as a CUDA
    graph: the probabilities the grounding processors keep live and die inside one call.
    """

    def __init__(self, unet, text_encoder, noise_scheduler, args: ShapesTrainingArguments, device) -> None:
        super().__init__()
        self.unet, self.text_encoder, self.noise_scheduler, self.args = unet, text_encoder, noise_scheduler, args
        self.device = device
        self.attention: list[torch.Tensor] = []
        self.self_attention: list[torch.Tensor] | None = [] if args.region_weight else None
        if args.grounding_weight or args.region_weight:
            unet.set_attn_processor(GroundingAttnProcessor(self.attention, self.self_attention))

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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``noisy`` latents of ``clean`` ones at ``timesteps``, captions ``tokens``; the grounding loss's
        inputs as in :func:`grounding_loss`. Returns the denoising, grounding and region losses."""
        self.attention.clear()
        if self.self_attention is not None:
            self.self_attention.clear()
        with autocast(self.device, self.args.unet_mixed_precision):
            states = self.text_encoder(tokens).last_hidden_state
            prediction = self.unet(noisy, timesteps, states).sample
        denoising = denoising_loss(
            self.noise_scheduler, prediction.float(), clean, noise, timesteps, self.args.snr_gamma
        )
        grounding = torch.zeros((), device=denoising.device)
        if self.args.grounding_weight:
            grounding = grounding_loss(self.attention, token_weights, masks, valid)
        region = torch.zeros((), device=denoising.device)
        if self.self_attention is not None:
            region = region_loss(self.self_attention, masks, valid)
            self.self_attention.clear()
        self.attention.clear()
        return denoising, grounding, region


def fitted_steps(step: int, steps_done: int, elapsed: float, deadline: float) -> int:
    """The step count that ends within ``deadline`` at the rate of the ``steps_done`` steps of ``elapsed``
    seconds so far, keeping a tenth of the time left (and 20 s) for the probes and the export."""
    left = deadline - time.time()
    return step + max(1, int(steps_done / elapsed * (0.9 * left - 20)))


def train_unet(args, vae, latents, training: TrainingScenes, device, out: Path, deadline: float):
    unet, text_encoder, tokenizer = unet_modules(args, device)
    noise_scheduler = training_scheduler(args.prediction_type)
    losses = StepLosses(unet, text_encoder, noise_scheduler, args, device)
    fast = not args.plain_step
    step_losses = torch.compile(losses, mode="reduce-overhead") if fast and device.type == "cuda" else losses
    inputs = {name: t.to(device) for name, t in caption_tokens(training, tokenizer, out / "tokens.pt").items()}
    ema = EMAModel(unet.parameters(), decay=args.ema_decay, foreach=fast)
    params = [p for p in (*unet.parameters(), *text_encoder.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=1e-2, fused=fast)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / args.warmup_steps)
            * 0.5
            * (1 + math.cos(math.pi * min(s, args.unet_steps) / args.unet_steps))
        ),
    )
    random = RandomState(args.seed + 10_000)
    checkpoint = Checkpoint(
        out / "unet.ckpt",
        unet=unet,
        text_encoder=text_encoder,
        ema=ema,
        optimizer=optimizer,
        schedule=schedule,
        random=random,
    )
    step = checkpoint.load()
    ema.to(device)  # a checkpoint's EMA weights load on the CPU
    evaluate = FidelityProbe(args, vae, tokenizer) if args.eval_every else None
    empty = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    empty = empty.input_ids.to(device)
    scaling = 1.0 / latents.std().item()
    latents = latents.to(device)
    unet.train()
    text_encoder.train()
    first_step, started = step, time.time()
    print(
        json.dumps({"stage": "unet", "step": step, "startup_seconds": round(started - PROCESS_STARTED, 1)}), flush=True
    )
    while step < args.unet_steps and time.time() < deadline:
        index = torch.from_numpy(random.numpy.integers(0, len(latents), args.batch_size)).to(device)
        dropped = torch.from_numpy(random.numpy.random(args.batch_size) < args.caption_dropout).to(device)
        clean = latents[index] * scaling
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch_size,), device=device)
        grounded = inputs["valid"][index] & ~dropped[:, None] & (timesteps <= args.grounding_max_timestep)[:, None]
        denoising, grounding, region = step_losses(
            noisy=noise_scheduler.add_noise(clean, noise, timesteps),
            clean=clean,
            noise=noise,
            timesteps=timesteps,
            tokens=torch.where(dropped[:, None], empty, inputs["ids"][index]),  # no host sync, unlike a mask index
            token_weights=inputs["token_weights"][index].float(),
            masks=inputs["masks"][index].float(),
            valid=grounded,
        )
        loss = denoising + args.grounding_weight * grounding + args.region_weight * region
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
            print(
                json.dumps(
                    {
                        "stage": "unet",
                        "step": step,
                        "loss": round(denoising.item(), 5),
                        "grounding": round(grounding.item(), 4),
                        "region": round(region.item(), 4),
                        "lr": schedule.get_last_lr()[0],
                        "seconds": round(time.time() - started),
                    }
                ),
                flush=True,
            )
        if step % args.checkpoint_every == 0:
            checkpoint.save(step)
        if evaluate and step % args.eval_every == 0:
            ema.store(unet.parameters())
            ema.copy_to(unet.parameters())
            print(json.dumps({"stage": "eval", "step": step, **evaluate(unet, text_encoder, scaling)}), flush=True)
            ema.restore(unet.parameters())
            unet.train()
            text_encoder.train()
    checkpoint.save(step)
    ema.copy_to(unet.parameters())
    unet.set_attn_processor(AttnProcessor2_0())
    done = step >= args.unet_steps or args.fit_steps_to_time  # a fitted run exports at its deadline
    return unet.eval(), text_encoder.eval(), tokenizer, scaling, done


def shapes_pipeline(vae, unet, text_encoder, tokenizer, scaling: float, args) -> FreeATMDiffusionPipeline:
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


def export(args, vae, unet, text_encoder, tokenizer, scaling: float, export_dir: Path) -> None:
    pipe = shapes_pipeline(vae, unet, text_encoder, tokenizer, scaling, args)
    pipe.to(getattr(torch, args.export_dtype)).save_pretrained(export_dir)
    (export_dir / "training_args.json").write_text(
        json.dumps({k: v for k, v in asdict(args).items() if k != "max_minutes"}, indent=2)
    )


def main() -> None:
    (args,) = HfArgumentParser(ShapesTrainingArguments).parse_args_into_dataclasses()
    out = Path(args.output_dir)
    check_run_settings(out, asdict(args), may_change=RESUMABLE_CHANGES)
    record_run_settings(out, asdict(args))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    deadline = time.time() + 60 * args.max_minutes
    torch.manual_seed(args.seed)
    training = scenes(args, out / "scenes.npz")
    if args.init_from:
        vae, vae_done = AutoencoderKL.from_pretrained(args.init_from, subfolder="vae").to(device).eval(), True
    else:
        vae, vae_done = train_vae(args, training, device, out, deadline)
    if not vae_done:
        print("stopped during the VAE stage; rerun to resume")
        return
    latents = encode_latents(vae, training.images, device, out / "latents.pt")
    unet, text_encoder, tokenizer, scaling, done = train_unet(args, vae, latents, training, device, out, deadline)
    if not done:
        print("stopped during the UNet stage; rerun to resume")
        return
    export_dir = Path(args.export_dir or out / "pipeline")
    export(args, vae.cpu(), unet.cpu(), text_encoder.cpu(), tokenizer, scaling, export_dir)
    print(f"saved the pipeline to {export_dir}")


if __name__ == "__main__":
    run_reporting_bad_input(main, "train_shapes_diffusion.py")
