"""Probes of a frozen backbone: features pooled over each object's map (or over the image), classified by
their nearest neighbours among a labelled bank (kNN) or by a logistic-regression layer (linear probe).

Any transformers vision backbone works: a CNN's ``last_hidden_state`` is its feature grid ``(B, C, h, w)``;
a ViT's is a CLS token followed by the patches in row-major order, which are laid back on their grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import DatasetDict
from torch.utils.data import DataLoader

from ..world import shapes_dataset
from .collate import ObjectMapCollator
from .pooling import attentive_pool

#: ``object``: each object's map over the feature grid; ``mean``: the whole grid; ``cls``: a ViT's CLS token
POOLINGS = ("object", "mean", "cls")


def pooled_features(backbone, pixel_values: torch.Tensor, object_maps: torch.Tensor, pooling: str = "object"):
    """Features ``(B, M, C)`` per object slot; image-level poolings (``mean``, ``cls``) give every slot the
    image's feature, which is an object-level label only in one-object scenes
    (``shapes_probe_splits(n, max_objects=1)``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    hidden = backbone(pixel_values).last_hidden_state
    cls, grid = None, hidden
    if hidden.ndim == 3:  # a ViT: CLS token, then the patches row by row
        cls, rows = hidden[:, 0], pixel_values.shape[-2] // backbone.config.patch_size
        grid = hidden[:, 1:].transpose(1, 2).unflatten(2, (rows, -1))
    if pooling == "object":
        return attentive_pool(grid, object_maps)
    if pooling == "cls" and cls is None:
        raise ValueError(f"pooling 'cls' needs a backbone with a CLS token; {type(backbone).__name__} has none")
    image = grid.mean((-2, -1)) if pooling == "mean" else cls
    return image.unsqueeze(1).expand(-1, object_maps.shape[1], -1)


@torch.no_grad()
def object_features(backbone, dataset, collator: ObjectMapCollator, batch_size: int = 64, pooling: str = "object"):
    """L2-normalised pooled features ``(N, C)`` and labels ``(N,)`` of every labelled object."""
    backbone.eval()
    device = next(backbone.parameters()).device
    features, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        pooled = pooled_features(backbone, batch["pixel_values"].to(device), batch["object_maps"].to(device), pooling)
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


def probe_backbone(
    backbone, train_dataset, test_dataset, collator: ObjectMapCollator, k: int = 20, pooling: str = "object"
) -> dict:
    """``knn_accuracy`` and ``linear_accuracy`` of the objects of ``test_dataset``, fitted on
    ``train_dataset`` (rows with ``image``, ``attention_maps`` and per-object ``labels``)."""
    bank = object_features(backbone, train_dataset, collator, pooling=pooling)
    queries = object_features(backbone, test_dataset, collator, pooling=pooling)
    return {
        "knn_accuracy": knn_accuracy(*bank, *queries, k=k),
        "linear_accuracy": linear_probe_accuracy(*bank, *queries),
    }


def shapes_probe_splits(num_scenes: int, seed: int = 2, max_objects: int = 3) -> DatasetDict:
    """Rendered scenes for probing, half ``train`` (the bank / fitting set) and half ``test``; labels are
    the shape kinds, so colour alone cannot solve the probe. ``seed`` 2 keeps them apart from the
    ``shapes:N`` training source (seed 1); ``max_objects=1`` for image-level poolings."""
    scenes = shapes_dataset(num_scenes, seed=seed, max_objects=max_objects)
    return scenes.train_test_split(test_size=0.5, seed=0)
