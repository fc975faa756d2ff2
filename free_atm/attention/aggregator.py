"""Running per-object sums of cross-attention maps over layers and timesteps, in constant memory."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from .attribution import Attribution
from .concepts import ConceptStream
from .config import CaptureConfig
from .refinement import SelfAttentionAggregator, grid_of, refine_maps


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, M, h, w)`` maps to ``size`` (antialiased when shrinking)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if not maps.numel():  # maps of no object: interpolate refuses an empty tensor
        return maps.new_zeros(*maps.shape[:-2], *size)
    shrinking = maps.shape[-2] > size[0] or maps.shape[-1] > size[1]
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


@lru_cache(maxsize=64)
def layer_grid(num_queries: int, latent_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """The downsampling factor and ``(h, w)`` grid of a layer with ``num_queries`` spatial positions.

    UNet downsampling halves with rounding up, so a factor ``s`` gives ``ceil(H / s) x ceil(W / s)``.
    """
    height, width = latent_size
    scale = 1
    while scale <= max(height, width):
        grid = grid_of(scale, latent_size)
        if grid[0] * grid[1] == num_queries:
            return scale, grid
        scale *= 2
    raise RuntimeError(f"a layer with {num_queries} queries does not fit a {height}x{width} latent")


class AttentionAggregator:
    """Accumulates the object columns of cross-attention probabilities.

    Args:
        token_weights: ``(num_images, sequence_length, num_objects)``; column ``m`` averages the tokens
            of object ``m`` (see :func:`free_atm.tokens.object_token_weights`).
        config: which layers and timesteps count, and the aggregation resolution.

    A forward pre-hook of the denoiser (UNet or transformer) calls :meth:`start_call` before each call,
    and each capture processor calls :meth:`wants` and :meth:`add`. Only the sums and a counter are kept,
    so memory does not depend on the number of steps or layers. With refinement, ``self_attention``
    (set by the capture) keeps the running self-attention, and :meth:`result` refines the maps with it.
    With ``attribution`` (words the prompts lack), each layer's probabilities carry, after the text keys,
    the columns of those words' own keys (:mod:`.attribution`), which ``token_weights`` then covers.
    With ``config.keep``, the maps of each counted layer (by its order in the forward pass) and/or step are
    also kept (:meth:`kept`); only then does memory grow with the number of layers or steps.
    """

    def __init__(self, token_weights: torch.Tensor, config: CaptureConfig) -> None:
        self.token_weights = token_weights.float()
        self.config = config
        self.latent_size: tuple[int, int] | None = None
        self.active = True
        self.last_timestep: float | None = None
        self.sums: torch.Tensor | None = None
        self.count = 0
        self._columns: torch.Tensor | None = None
        self.self_attention: SelfAttentionAggregator | None = None
        self.attribution: Attribution | None = None
        self.concepts: ConceptStream | None = None  # SD3 and Flux: the attribution's words as concept tokens
        self.layer_index = 0  # the next counted layer of the current call
        self.timesteps: list[float] = []  # of the counted calls, when maps per step are kept
        self.layer_sums: list[torch.Tensor] = []
        self.layer_scales: list[int] = []  # the downsampling factor of each kept layer
        self.step_layers: list[list[torch.Tensor]] = []  # per counted call, its layers' maps (or their sum)

    @property
    def num_images(self) -> int:
        return self.token_weights.shape[0]

    @property
    def map_size(self) -> tuple[int, int]:
        """The aggregation resolution for the current latent size."""
        height, width = self.latent_size
        target = self.config.attention_resolution
        if target is None:
            return height, width
        return target, max(1, round(target * width / height))

    def start_call(self, latent_size: tuple[int, int], timestep: float, first_per_timestep: bool = False) -> None:
        """Called before each denoiser call: the latent size, and whether this call's maps count.

        ``timestep`` is on the scheduler's 0-1000 scale. With ``first_per_timestep`` only the first call of
        each timestep counts: transformer pipelines call again at the same timestep for true classifier-free
        guidance's negative prompt (Flux) or skip-layer guidance (SD3), after the conditional call.
        """
        self.latent_size = tuple(int(s) for s in latent_size)
        window = self.config.timestep_range
        self.active = window is None or window[0] <= timestep <= window[1]
        if first_per_timestep:
            self.active = self.active and timestep != self.last_timestep
        self.last_timestep = timestep
        self.layer_index = 0
        if self.active and self.config.keep != "none":
            self.timesteps.append(timestep)
            self.step_layers.append([])
        if self.self_attention is not None:
            self.self_attention.start_call(self.latent_size, self.active and self.token_weights.shape[-1] > 0)

    def wants(self, num_queries: int, block: int | None = None) -> bool:
        """Whether a layer with ``num_queries`` positions (of transformer block ``block``) counts now."""
        if not self.active or self.token_weights.shape[-1] == 0:
            return False
        if block is not None and self.config.blocks is not None:
            return block in self.config.blocks
        scales = self.config.layer_scales
        return scales is None or layer_grid(num_queries, self.latent_size)[0] in scales

    def object_columns(self) -> torch.Tensor:
        """The text-token columns that some object of some image reads (the rest weigh nothing)."""
        if self._columns is None or self._columns.device != self.token_weights.device:
            self._columns = self.token_weights.ne(0).any(dim=2).any(dim=0).nonzero().flatten()
        return self._columns

    def add(self, probs: torch.Tensor, columns: torch.Tensor | None = None) -> None:
        """Add one layer's probabilities ``(num_images, heads, queries, keys)`` (full softmax over keys), or
        only the key ``columns`` of that softmax (:meth:`object_columns`)."""
        batch, _, num_queries, num_keys = probs.shape
        if self.token_weights.device != probs.device:  # once: the weights then live where the UNet runs
            self.token_weights = self.token_weights.to(probs.device)
        weights = self.token_weights if columns is None else self.token_weights[:, columns]
        if weights.shape[1] != num_keys:
            raise RuntimeError(
                f"the text encoder gives {num_keys} keys but the object tokens were mapped for {weights.shape[1]}"
            )
        maps = probs.mean(dim=1) @ weights  # (B, queries, objects)
        scale, (height, width) = layer_grid(num_queries, self.latent_size)
        maps = maps.transpose(1, 2).reshape(batch, -1, height, width)
        maps = resize_maps(maps, self.map_size)
        if self.config.keep != "none":
            self._keep(maps, scale)
        if self.sums is None:
            self.sums = maps
        else:
            self.sums += maps
        self.count += 1
        self.layer_index += 1

    def _keep(self, maps: torch.Tensor, scale: int) -> None:
        """Keep one layer's maps (of downsampling factor ``scale``) as ``config.keep`` asks: summed per layer,
        and per step as they are (each step's list), or summed over the step's layers when only steps are
        kept."""
        keep = self.config.keep
        if keep in ("layers", "layers_and_steps"):
            if self.layer_index == len(self.layer_sums):
                self.layer_sums.append(torch.zeros_like(maps))
                self.layer_scales.append(scale)
            self.layer_sums[self.layer_index] += maps
        if keep == "layers_and_steps":
            self.step_layers[-1].append(maps.clone())
        elif keep == "steps":
            step = self.step_layers[-1]
            if step:
                step[0] += maps
            else:
                step.append(maps.clone())

    def kept(self) -> dict[str, torch.Tensor]:
        """The kept maps, each ``(num_images, num_objects, ..., h, w)``: ``"layers"`` ``(.., L, h, w)``, the
        mean over steps of each counted layer; ``"steps"`` ``(.., S, h, w)``, the mean over layers of each
        counted step; ``"layers_and_steps"`` ``(.., S, L, h, w)``. Their means equal the aggregated map
        before normalisation and refinement."""
        keep, steps = self.config.keep, len(self.step_layers)
        if keep == "none" or not self.count:
            return {}
        kept: dict[str, torch.Tensor] = {}
        layers = self.count // steps
        if keep in ("layers", "layers_and_steps"):
            kept["layers"] = torch.stack(self.layer_sums, 2) / steps
        if keep == "layers_and_steps":
            kept["layers_and_steps"] = torch.stack([torch.stack(step, 2) for step in self.step_layers], 2)
            kept["steps"] = kept["layers_and_steps"].mean(3)
        elif keep == "steps":
            kept["steps"] = torch.stack([step[0] for step in self.step_layers], 2) / layers
        return kept

    def result(self) -> torch.Tensor:
        """The mean map ``(num_images, num_objects, h, w)`` over every counted layer and step, refined along
        the self-attention when the config asks for it; with no object to map, maps of no object. A
        setting under which no layer or step counted is a ``ValueError`` naming it."""
        if self.token_weights.shape[-1] == 0:
            return self.token_weights.new_zeros(self.num_images, 0, *self.map_size)
        if self.count == 0:
            raise ValueError(
                "no attention map was captured: no layer matched layer_scales="
                f"{self.config.layer_scales} / blocks={self.config.blocks} within "
                f"timestep_range={self.config.timestep_range} (0-1000, 0 = the clean image); widen the window "
                "or choose other layers"
            )
        maps = self.sums / self.count
        if self.self_attention is None:
            return maps
        attention = self.self_attention
        return refine_maps(maps, attention.result(), attention.grid, self.config.refinement_power)
