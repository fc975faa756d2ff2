"""The shapes model's denoising loss against a hand computation of min-SNR weighting."""

from __future__ import annotations

import pytest
import torch

from free_atm.models.shapes.architecture import training_scheduler
from free_atm.models.shapes.denoising import denoising_loss


def _batch():
    generator = torch.Generator().manual_seed(0)
    clean, noise, prediction = (torch.randn(4, 4, 8, 8, generator=generator) for _ in range(3))
    return clean, noise, prediction, torch.tensor([0, 10, 400, 999])


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_min_snr_weights_against_the_formula(kind, gamma):
    scheduler = training_scheduler(kind)
    clean, noise, prediction, t = _batch()
    alpha_bar = scheduler.alphas_cumprod[t].double()
    a, s = alpha_bar.sqrt().view(-1, 1, 1, 1), (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    target = a * noise - s * clean if kind == "v_prediction" else noise
    errors = ((prediction.double() - target) ** 2).mean((1, 2, 3))
    snr = alpha_bar / (1 - alpha_bar)
    if gamma:
        errors = errors * torch.minimum(snr, torch.tensor(gamma)) / (snr + 1 if kind == "v_prediction" else snr)
    loss = denoising_loss(scheduler, prediction, clean, noise, t, gamma)
    assert loss.item() == pytest.approx(errors.mean().item(), rel=1e-5)


def test_min_snr_downweights_only_the_low_noise_steps():
    scheduler = training_scheduler()
    clean, noise, prediction, t = _batch()
    plain = [
        denoising_loss(scheduler, prediction[i : i + 1], clean[i : i + 1], noise[i : i + 1], t[i : i + 1])
        for i in range(4)
    ]
    weighted = [
        denoising_loss(scheduler, prediction[i : i + 1], clean[i : i + 1], noise[i : i + 1], t[i : i + 1], 5.0)
        for i in range(4)
    ]
    ratios = [w / p for w, p in zip(weighted, plain)]
    assert ratios[0] < 0.01 and ratios[1] < 0.1  # SNR in the hundreds at t = 0 and 10
    assert ratios[3] == pytest.approx(1.0)  # SNR below gamma at t = 999: unchanged


def test_rejects_an_unsupported_prediction_type():
    scheduler = training_scheduler("sample")
    clean, noise, prediction, t = _batch()
    with pytest.raises(ValueError, match="prediction type must be 'epsilon' or 'v_prediction', got 'sample'"):
        denoising_loss(scheduler, prediction, clean, noise, t)
