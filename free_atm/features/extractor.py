"""``DiffusionFeatureExtractor``: a frozen diffusers U-Net read as a feature extractor (the second seed).

The clean input (the VAE's latents for a latent model, else pixels in [-1, 1]) is noised to each asked
noise level t with the scheduler's ``add_noise`` (t is the training noise index; t = 0 is the clean input
itself), the U-Net runs once with the empty prompt's conditioning, and forward hooks keep the outputs of
the asked blocks; the forward stops after the last of them. Noise draw k is the same for every image
(seeded by ``noise_seed + k``), so an image's features do not depend on its batch, and ``noise_draws``
draws are averaged.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import torch

from .blocks import Block, block_names, feature_map, skip_pairs


class _Stop(Exception):
    """Raised by the hook of the last needed block: the rest of the U-Net is not run."""


class DiffusionFeatureExtractor:
    """Features ``{(t, block): (B, C, h, w)}`` of ``blocks`` at noise levels ``timesteps``.

    ``conditioning`` holds the U-Net's keyword inputs for one image (``encoder_hidden_states`` of the
    empty prompt, SDXL's ``added_cond_kwargs``), expanded to each batch; none for a ``UNet2DModel``.
    Runs on the U-Net's device and dtype; gradients flow only when DifFeed's ``additions`` need them.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        scheduler,
        blocks: Sequence[str],
        timesteps: Sequence[int],
        vae: torch.nn.Module | None = None,
        conditioning: Mapping | None = None,
        noise_seed: int = 0,
        noise_draws: int = 1,
        sample_size: int | None = None,
    ):
        """``sample_size``: the image side the blocks are listed for (default: the U-Net's)."""
        self.unet, self.scheduler, self.vae = unet.eval().requires_grad_(False), scheduler, vae
        if vae is not None:
            vae.eval().requires_grad_(False)
        self.conditioning = dict(conditioning or {})
        self._takes_text = "encoder_hidden_states" in inspect.signature(unet.forward).parameters
        self.noise_seed, self.noise_draws = noise_seed, noise_draws
        self.latent_scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
        self.image_size = sample_size or unet.config.sample_size * self.latent_scale
        self._modules = dict(unet.named_modules())
        self.all_blocks = self.list_blocks(self.image_size)
        self._by_name = known = {block.name: block for block in self.all_blocks}
        if not blocks:
            raise ValueError("pick at least one block (list_blocks() shows them)")
        for name in blocks:
            if name not in known:
                raise ValueError(f"block {name!r} is not one of the U-Net's blocks: {', '.join(known)}")
        train_steps = scheduler.config.num_train_timesteps
        for t in timesteps:
            if not 0 <= t < train_steps:
                raise ValueError(f"timestep {t} is outside the scheduler's noise levels 0..{train_steps - 1}")
        if noise_draws < 1:
            raise ValueError(f"noise_draws must be at least 1, got {noise_draws}")
        self.blocks = sorted(set(blocks), key=lambda name: known[name].ordinal)
        self.timesteps = list(timesteps)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def block(self, name: str) -> Block:
        return self._by_name[name]

    @torch.no_grad()
    def list_blocks(self, image_size: int) -> list[Block]:
        """Every addressable block with its forward ordinal, channels and grid for ``image_size`` images."""
        found: dict[str, torch.Size] = {}
        modules = self._modules

        def record(module, inputs, output, name: str) -> None:
            found.setdefault(name, feature_map(output).shape)

        hooks = [
            modules[name].register_forward_hook(lambda m, i, o, n=name: record(m, i, o, n))
            for name in block_names(self.unet)
        ]
        side = image_size // self.latent_scale
        sample = torch.zeros(1, self.unet.config.in_channels, side, side, device=self.device, dtype=self.dtype)
        try:
            self._unet(sample, torch.zeros(1, dtype=torch.long, device=self.device))
        finally:
            for hook in hooks:
                hook.remove()
        return [Block(k + 1, name, shape[1], tuple(shape[-2:])) for k, (name, shape) in enumerate(found.items())]

    def skip_pairs(self) -> dict[str, str]:
        """Each up-block resnet and attention, and the down-path block whose skip feeds it (DifFeed)."""
        return skip_pairs(self.all_blocks)

    def clean_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What the U-Net denoises: ``pixel_values`` in [0, 1] to [-1, 1], through the VAE (the mean of its
        latent distribution, or a VQ model's latents, times ``scaling_factor``) for a latent model."""
        x = pixel_values.to(self.device, self.dtype) * 2 - 1
        if self.vae is None:
            return x
        with torch.no_grad():
            encoded = self.vae.encode(x)  # AutoencoderKL: a distribution; VQModel: latents
            latents = encoded.latent_dist.mean if hasattr(encoded, "latent_dist") else encoded.latents
            return latents * getattr(self.vae.config, "scaling_factor", 1.0)

    def noise(self, draw: int, like: torch.Tensor) -> torch.Tensor:
        """Noise draw ``draw``: one pattern (seeded by ``noise_seed + draw``) shared by every image."""
        generator = torch.Generator().manual_seed(self.noise_seed + draw)
        pattern = torch.randn(1, *like.shape[1:], generator=generator)
        return pattern.to(like.device, like.dtype).expand_as(like)

    def noisy(self, clean: torch.Tensor, t: int, draw: int) -> torch.Tensor:
        if t == 0:
            return clean
        return self.scheduler.add_noise(clean, self.noise(draw, clean), torch.tensor([t]))

    def __call__(
        self,
        pixel_values: torch.Tensor,
        additions: Mapping[tuple[int, str], torch.Tensor] | None = None,
        blocks: Sequence[str] | None = None,
    ) -> dict[tuple[int, str], torch.Tensor]:
        """Features of ``blocks`` (default: the extractor's) for images ``(B, 3, H, W)`` in [0, 1], averaged
        over the noise draws; ``additions[(t, block)]`` is added to that block's output first (DifFeed)."""
        clean = self.clean_input(pixel_values)
        blocks = list(blocks or self.blocks)
        features = {}
        for t in self.timesteps:
            draws = 1 if t == 0 else self.noise_draws
            added = {name: value for (step, name), value in (additions or {}).items() if step == t}
            for draw in range(draws):
                for name, value in self._forward(self.noisy(clean, t, draw), t, blocks, added).items():
                    features[(t, name)] = features.get((t, name), 0) + value / draws
        return features

    def _forward(self, sample, t: int, blocks: list[str], added: Mapping[str, torch.Tensor]):
        kept: dict[str, torch.Tensor] = {}
        last = max(blocks, key=lambda name: self.block(name).ordinal)
        modules = self._modules

        def hook(module, inputs, output, name):
            if name in added:  # DifFeed: the feedback joins this block's output, skip connection included
                current = feature_map(output)
                output = _replace_map(output, current + added[name].to(current.device, current.dtype))
            if name in blocks:
                kept[name] = feature_map(output)
            if name == last:
                raise _Stop
            return output

        hooks = [
            modules[name].register_forward_hook(lambda m, i, o, n=name: hook(m, i, o, n)) for name in {*blocks, *added}
        ]
        grad = any(value.requires_grad for value in added.values())
        try:
            with torch.set_grad_enabled(grad):
                self._unet(sample, torch.full((len(sample),), t, device=self.device, dtype=torch.long))
        except _Stop:
            pass
        finally:
            for handle in hooks:
                handle.remove()
        return kept

    def _unet(self, sample: torch.Tensor, timesteps: torch.Tensor):
        batch = len(sample)
        kwargs = {}
        for key, value in self.conditioning.items():
            if isinstance(value, Mapping):
                kwargs[key] = {k: v.expand(batch, *v.shape[1:]) for k, v in value.items()}
            else:
                kwargs[key] = value.expand(batch, *value.shape[1:])
        if self._takes_text:
            kwargs.setdefault("encoder_hidden_states", None)
        return self.unet(sample, timesteps, **kwargs)


def _replace_map(output, new: torch.Tensor):
    """``output`` with its feature map replaced by ``new``, in the same container."""
    if isinstance(output, torch.Tensor):
        return new
    if hasattr(output, "sample"):
        output.sample = new
        return output
    return (new, *output[1:])
