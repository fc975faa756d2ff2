"""Per-sample seeds: sample ``index`` of a run seeded with ``seed`` has its own seed, whoever generates it."""

import numpy as np


def derive_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))
