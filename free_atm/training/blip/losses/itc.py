"""BLIP's image-text contrastive loss (ITC) over the global batch, logits in float32.

With L2-normalised image features ``v_i`` and text features ``t_j`` and a learned temperature ``T``::

    loss = ( CE(softmax_j(v_i . t_j / T), i) + CE(softmax_j(t_i . v_j / T), i) ) / 2

each of this process's items against every process's items of the other modality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...distributed import gather_with_grad, world_size_and_rank


def itc_loss(image_features: torch.Tensor, text_features: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch: each of this process's images against every process's
    texts and back; the positive of image i is text i. Features are L2-normalised, logits in float32."""
    images, texts = gather_with_grad(image_features.float()), gather_with_grad(text_features.float())
    offset = world_size_and_rank()[1] * len(image_features)
    targets = torch.arange(len(image_features), device=image_features.device) + offset
    image_to_text = image_features.float() @ texts.T / temperature
    text_to_image = text_features.float() @ images.T / temperature
    return (F.cross_entropy(image_to_text, targets) + F.cross_entropy(text_to_image, targets)) / 2
