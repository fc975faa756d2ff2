"""How well a score ranks positives above negatives: the area under the ROC curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """The area under the ROC curve of ``scores`` for the binary ``labels``: the probability that a random
    positive scores above a random negative, ties counting one half (the Mann-Whitney U statistic over
    ``n_pos * n_neg``). ``ValueError`` when the labels hold only one class."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be two vectors of one length")
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError(f"AUROC needs both classes; got {positives} positives and {negatives} negatives")
    ranks = _mean_ranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their mean rank (``scipy.stats.rankdata``'s default, without
    importing scipy.stats, which alone takes longer to import than the rest of ``free_atm.metrics``)."""
    order = np.argsort(values, kind="stable")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks
