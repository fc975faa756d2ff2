"""The README's main job, and the package's own configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from free_atm import CaptureConfig
from free_atm.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_generate_rejects_bad_count(tmp_path):
    with pytest.raises(SystemExit, match="--num-images must be positive, got 0"):
        main(["generate", "--num-images", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--shard-size must be positive, got -1"):
        main(["generate", "--shard-size", "-1", "--out", str(tmp_path)])
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
