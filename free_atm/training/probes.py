"""Object-level kNN probe: backbone features pooled over each object's map, classified by their nearest
neighbours among a labelled bank (the shapes world's shape kinds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .collate import ObjectMapCollator
from .contrastive_model import attentive_pool


@torch.no_grad()
def object_features(backbone, dataset, collator: ObjectMapCollator, batch_size: int = 64):
    """L2-normalised pooled features ``(N, C)`` and labels ``(N,)`` of every labelled object."""
    backbone.eval()
    device = next(backbone.parameters()).device
    features, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        grid = backbone(batch["pixel_values"].to(device)).last_hidden_state
        pooled = attentive_pool(grid, batch["object_maps"].to(device))
        keep = batch["object_labels"] >= 0
        features.append(F.normalize(pooled[keep.to(device)], dim=-1).cpu())
        labels.append(batch["object_labels"][keep])
    return torch.cat(features), torch.cat(labels)


def knn_accuracy(
    train_features, train_labels, test_features, test_labels, k: int = 20, temperature: float = 0.07
) -> float:
    """Weighted kNN (cosine similarity, as in InstDisc/DINO) accuracy of the test objects."""
    similarity = test_features @ train_features.T
    top, index = similarity.topk(min(k, len(train_features)), dim=-1)
    votes = torch.zeros(len(test_features), int(train_labels.max()) + 1)
    votes.scatter_add_(1, train_labels[index], (top / temperature).exp())
    return float((votes.argmax(-1) == test_labels).float().mean())
