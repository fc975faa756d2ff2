"""The denoising loss of the shapes model's training, with min-SNR-gamma weighting (Hang et al., ICCV 2023).

Uniform weights over timesteps let the low-noise steps, whose targets are easy and whose gradients
conflict with the high-noise ones, dominate; min-SNR caps each step's weight at ``gamma / SNR(t)`` and
converged about 3x faster in the paper's experiments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def denoising_loss(
    scheduler: DDPMScheduler,
    prediction: torch.Tensor,
    clean: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    snr_gamma: float = 0.0,
) -> torch.Tensor:
    """MSE against the scheduler's target (noise or velocity), each sample weighted by min-SNR-gamma
    when ``snr_gamma`` is positive: ``min(SNR, gamma) / SNR`` for noise, ``/ (SNR + 1)`` for velocity."""
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction type must be 'epsilon' or 'v_prediction', got {kind!r}")
    target = scheduler.get_velocity(clean, noise, timesteps) if kind == "v_prediction" else noise
    per_sample = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        snr = compute_snr(scheduler, timesteps)
        divisor = snr + 1 if kind == "v_prediction" else snr
        per_sample = per_sample * snr.clamp(max=snr_gamma) / divisor
    return per_sample.mean()
