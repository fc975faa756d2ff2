"""The object-level probes: kNN against a written-out vote, the linear probe on data only a line separates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from free_atm.training import knn_accuracy, linear_probe_accuracy


def test_knn_matches_a_written_out_weighted_vote():
    torch.manual_seed(0)
    bank, bank_labels = F.normalize(torch.randn(30, 4), dim=-1), torch.randint(0, 3, (30,))
    queries, query_labels = F.normalize(torch.randn(12, 4), dim=-1), torch.randint(0, 3, (12,))
    correct = 0
    for query, label in zip(queries, query_labels):
        similarity = bank @ query
        nearest = similarity.argsort(descending=True)[:5]
        votes = [sum(float((similarity[j] / 0.1).exp()) for j in nearest if bank_labels[j] == c) for c in range(3)]
        correct += max(range(3), key=votes.__getitem__) == int(label)
    assert knn_accuracy(bank, bank_labels, queries, query_labels, k=5, temperature=0.1) == pytest.approx(correct / 12)


def test_linear_probe_finds_two_hyperplanes_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(600, 8, generator=generator) * 2 - 1
    w, v = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    labels = (features @ w > 0).long() + 2 * (features @ v > 0).long()  # four classes, one per quadrant
    train, test = slice(0, 400), slice(400, 600)
    assert linear_probe_accuracy(features[train], labels[train], features[test], labels[test]) >= 0.95
    shuffled = labels[torch.randperm(600, generator=generator)]
    assert linear_probe_accuracy(features[train], shuffled[train], features[test], shuffled[test]) < 0.4
