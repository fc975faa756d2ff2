"""``--min-confidence``: keep the rows (or, with ``--drop-objects``, the objects) whose masks are worth it.

A row is kept when every one of its masks has a confidence (:func:`free_atm.confidence.mask_confidence`) of
at least the minimum. With ``drop_objects`` a row loses only its objects below it, and is dropped when none
is left (an image whose drawn objects have no mask would teach a detector that they are background).
"""

from __future__ import annotations

import numpy as np

#: the fields of a sample that hold one entry per object, in mask order
PER_OBJECT = ("objects", "masks", "attention_maps", "boxes", "confidence")


def check_min_confidence(value: float) -> None:
    """``ValueError`` naming ``value`` unless it lies in [0, 1] (0 keeps everything)."""
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"--min-confidence must lie in [0, 1] (0 keeps every row), got {value}")


def filter_sample(sample: dict, min_confidence: float, drop_objects: bool = False) -> tuple[dict | None, int]:
    """The sample to write (``None`` to drop it) and how many of its objects were dropped."""
    low = np.asarray(sample["confidence"], np.float32) < min_confidence
    if not low.any():
        return sample, 0
    if not drop_objects or low.all():
        return None, int(low.sum())
    keep = np.flatnonzero(~low)
    kept = {name: [sample[name][i] for i in keep] for name in PER_OBJECT}
    kept = {name: np.stack(value) if name != "objects" else value for name, value in kept.items()}
    return {**sample, **kept}, int(low.sum())
