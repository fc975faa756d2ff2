"""The README's main job, and the package's own configuration."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from free_atm import CaptureConfig
from free_atm.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_generate_writes_images_masks_and_overlay(tmp_path):
    main(["generate", "--num-images", "2", "--out", str(tmp_path), "--steps", "2"])
    records = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [0, 1]
    first = records[0]
    assert Image.open(tmp_path / first["file"]).size == (64, 64)
    for m, box in enumerate(first["boxes"]):
        mask = np.asarray(Image.open(tmp_path / "masks" / f"00000_{m}.png")) > 0
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert box == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    assert Image.open(tmp_path / "overlay.png").size == (128, 64)


def test_generate_rejects_bad_count(tmp_path):
    with pytest.raises(SystemExit, match="--num-images must be positive, got 0"):
        main(["generate", "--num-images", "0", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold_method": "mean"}, "threshold_method must be one of"),
        ({"layer_scales": [0]}, "layer_scales must be positive ints"),
        ({"timestep_range": (900, 100)}, "low <= high, got \\(900, 100\\)"),
        ({"attention_resolution": -4}, "attention_resolution must be a positive int"),
        ({"threshold": 1.5}, "threshold must lie in \\[0, 1\\], got 1.5"),
    ],
)
def test_capture_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        CaptureConfig.from_dict(values)


def test_every_library_package_is_packaged():
    """pyproject lists packages explicitly (for the pipelines/ mapping); a new subpackage must be listed."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "free_atm").rglob("__init__.py")}
    assert on_disk <= listed
