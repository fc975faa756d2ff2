"""Configurations of the heads that classify from frozen diffusion U-Net features.

Every head records what it reads, so that a saved head can rebuild its feature extractor: the U-Net
(``unet``: a diffusers folder, a Hub id, or ``shapes`` for the shipped model), the blocks and their
channels and grids, the noise levels t, and the noise seed and draws.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class DiffusionHeadConfig(PretrainedConfig):
    """What every head shares: ``blocks`` read at each of ``timesteps`` (features in the order
    ``[(t, block) for t in timesteps for block in blocks]``), ``block_channels`` and ``block_grids``
    (``[h, w]``) per block, and the extractor's settings."""

    model_type = "free-atm-diffusion-head"

    def __init__(
        self,
        unet: str = "shapes",
        blocks: list[str] | None = None,
        timesteps: list[int] | None = None,
        block_channels: list[int] | None = None,
        block_grids: list[list[int]] | None = None,
        image_size: int = 64,
        noise_seed: int = 0,
        noise_draws: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.unet, self.image_size, self.noise_seed, self.noise_draws = unet, image_size, noise_seed, noise_draws
        self.blocks, self.timesteps = list(blocks or []), list(timesteps or [])
        self.block_channels = list(block_channels or [])
        self.block_grids = [list(grid) for grid in block_grids or []]
        if not len(self.blocks) == len(self.block_channels) == len(self.block_grids):
            raise ValueError(
                f"blocks, block_channels and block_grids must have one entry per block, got "
                f"{len(self.blocks)}, {len(self.block_channels)} and {len(self.block_grids)}"
            )

    def feature_keys(self) -> list[tuple[int, str]]:
        """The order in which a head takes its features."""
        return [(t, block) for t in self.timesteps for block in self.blocks]


class LinearProbeConfig(DiffusionHeadConfig):
    """diffssl's linear probe: each feature map average-pooled to ``pool_size`` x ``pool_size``; with
    ``feature_norm`` the flattened features pass a BatchNorm without affine parameters first (MAE's probe)."""

    model_type = "free-atm-diffusion-linear"

    def __init__(self, pool_size: int = 2, feature_norm: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.feature_norm = pool_size, feature_norm


class DifFormerConfig(DiffusionHeadConfig):
    """DifFormer: each block pooled to at most ``pool_size``, LayerNorm, a 1x1 conv to ``hidden_size``;
    the tokens of all blocks of one t and a CLS token through ``num_layers`` pre-norm transformer blocks
    (shared across t); the CLS outputs of every t into one linear classifier."""

    model_type = "free-atm-difformer"

    def __init__(
        self, pool_size: int = 16, hidden_size: int = 256, num_layers: int = 2, num_heads: int = 8, mlp_ratio: int = 4,
        **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.pool_size, self.hidden_size, self.num_layers = pool_size, hidden_size, num_layers
        self.num_heads, self.mlp_ratio = num_heads, mlp_ratio


class DifFeedConfig(DifFormerConfig):
    """DifFeed: a DifFormer reading a second pass in which each of ``feedback_blocks`` (decoder blocks,
    channels ``feedback_channels``), through its own 1x1 conv, BatchNorm and ReLU, is added to the output of
    ``feedback_targets`` (the down-path block whose skip feeds it, ``target_channels`` channels)."""

    model_type = "free-atm-diffeed"

    def __init__(
        self,
        feedback_blocks: list[str] | None = None,
        feedback_targets: list[str] | None = None,
        feedback_channels: list[int] | None = None,
        target_channels: list[int] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.feedback_blocks, self.feedback_targets = list(feedback_blocks or []), list(feedback_targets or [])
        self.feedback_channels, self.target_channels = list(feedback_channels or []), list(target_channels or [])
        if not len(self.feedback_blocks) == len(self.feedback_targets) == len(self.feedback_channels):
            raise ValueError("feedback_blocks, feedback_targets and feedback_channels need one entry per block")
