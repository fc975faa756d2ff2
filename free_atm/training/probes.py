"""Object-level probes of a frozen backbone: features pooled over each object's map, classified by their
nearest neighbours among a labelled bank (kNN) or by a logistic-regression layer (linear probe)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import DatasetDict
from torch.utils.data import DataLoader

from ..shapes import shapes_dataset
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


def linear_probe_accuracy(
    train_features, train_labels, test_features, test_labels, weight_decay: float = 1e-3, max_iter: int = 200
) -> float:
    """Accuracy of multinomial logistic regression fitted by full-batch L-BFGS on standardised features."""
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    x, x_test = (train_features.float() - mean) / std, (test_features.float() - mean) / std
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    layer = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), train_labels) + weight_decay * layer.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float((layer(x_test).argmax(-1) == test_labels).float().mean())


def probe_backbone(backbone, train_dataset, test_dataset, collator: ObjectMapCollator, k: int = 20) -> dict:
    """``knn_accuracy`` and ``linear_accuracy`` of the objects of ``test_dataset``, fitted on
    ``train_dataset`` (rows with ``image``, ``attention_maps`` and per-object ``labels``)."""
    bank = object_features(backbone, train_dataset, collator)
    queries = object_features(backbone, test_dataset, collator)
    return {
        "knn_accuracy": knn_accuracy(*bank, *queries, k=k),
        "linear_accuracy": linear_probe_accuracy(*bank, *queries),
    }


def shapes_probe_splits(num_scenes: int, seed: int = 2) -> DatasetDict:
    """Rendered scenes for probing, half ``train`` (the bank / fitting set) and half ``test``; labels are
    the shape kinds, so colour alone cannot solve the probe. ``seed`` 2 keeps them apart from the
    ``shapes:N`` training source (seed 1)."""
    return shapes_dataset(num_scenes, seed=seed).train_test_split(test_size=0.5, seed=0)
