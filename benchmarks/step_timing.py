"""Timing two or more training-step variants side by side in one process: what the step benchmarks share."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


def timed(step: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``step``, the device synchronised before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_times(
    arms: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each arm once as a warm-up, then ``repeats`` rounds, the order reversed every other round so that
    no arm always runs after the same one; returns the times and their medians."""
    for step in arms.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for repeat in range(repeats):
        for name in list(arms) if repeat % 2 == 0 else list(arms)[::-1]:
            times[name].append(timed(arms[name], device))
    return times, {name: statistics.median(values) for name, values in times.items()}
