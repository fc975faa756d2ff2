"""``DiffusionHeadModel``: what the heads share: features from an attached extractor or given, the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration import DiffusionHeadConfig


class DiffusionHeadModel(PreTrainedModel):
    """A classifier on frozen U-Net features. ``forward`` takes the features (a list in
    ``config.feature_keys()`` order, as a cache holds them) or images, which the attached
    :class:`~free_atm.features.DiffusionFeatureExtractor` turns into features. The extractor is not a
    sub-module and is not saved with the head: ``config`` names the U-Net, blocks, timesteps and noise, from
    which :func:`~free_atm.features.load_feature_extractor` rebuilds it for :meth:`attach`."""

    config_class = DiffusionHeadConfig
    main_input_name = "pixel_values"

    def __init__(self, config: DiffusionHeadConfig):
        super().__init__(config)
        self.extractor = None  # not an nn.Module: outside the module tree, never saved, never moved by .to()

    def attach(self, extractor) -> None:
        """Read images through ``extractor`` (it must give this head's blocks and timesteps)."""
        missing = set(self.config.blocks) - set(extractor.blocks)
        if missing or set(self.config.timesteps) - set(extractor.timesteps):
            raise ValueError(
                f"the extractor reads blocks {extractor.blocks} at t {extractor.timesteps}; this head needs "
                f"{self.config.blocks} at t {self.config.timesteps}"
            )
        self.extractor = extractor

    def features_of(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The features of images ``(B, 3, H, W)`` in [0, 1], in ``config.feature_keys()`` order."""
        if self.extractor is None:
            raise ValueError("this head has no feature extractor: attach one, or pass features")
        features = self.extractor(pixel_values)
        return [features[key].to(self.device) for key in self.config.feature_keys()]

    def logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        features: list[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        if features is None:
            if pixel_values is None:
                raise ValueError("pass pixel_values or features")
            features = self.features_of(pixel_values)
        logits = self.logits([f.float() for f in features])
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)
