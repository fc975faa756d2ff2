"""BLIP's ITC with a momentum encoder, a queue and momentum distillation, logits in float32.

The online image feature ``v_i`` is scored against the momentum text features of the global batch followed
by the queue, ``t'_j``; its target mixes the one-hot truth with the momentum model's own softmax::

    q_i = alpha * softmax_j(v'_i . t'_j / T) + (1 - alpha) * onehot(i)
    loss_i2t = -sum_j q_ij * log softmax_j(v_i . t'_j / T)

and the same from the texts' side; the loss is the mean of the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...distributed import world_size_and_rank


def itc_distilled_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_momentum: torch.Tensor,
    text_momentum: torch.Tensor,
    image_queue: torch.Tensor,
    text_queue: torch.Tensor,
    temperature: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """BLIP's ITC with a momentum encoder: this process's online features against the momentum features
    of the global batch (``image_momentum``, ``text_momentum``: every process's, gathered) followed by the
    queue; the target of image i is ``(1 - alpha)`` on text i plus ``alpha`` times the softmax of the
    momentum image's own similarities (momentum distillation), and the same from the texts' side. All
    features L2-normalised; logits in float32."""
    images = torch.cat([image_momentum.float(), image_queue.float()])
    texts = torch.cat([text_momentum.float(), text_queue.float()])
    mine = torch.arange(len(image_features), device=images.device) + world_size_and_rank()[1] * len(image_features)
    truth = F.one_hot(mine, len(texts)).float()

    def one_side(online: torch.Tensor, momentum: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = alpha * F.softmax(momentum.float() @ others.T / temperature, dim=1) + (1 - alpha) * truth
        return -(F.log_softmax(online.float() @ others.T / temperature, dim=1) * target).sum(1).mean()

    return (
        one_side(image_features, image_momentum[mine], texts) + one_side(text_features, text_momentum[mine], images)
    ) / 2
