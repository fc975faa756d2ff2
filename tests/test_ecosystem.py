"""What Hugging Face users expect of the package: pins that admit only versions with what the code uses,
a light import, pretrained folders that load with the stock Auto classes, and a Hub login checked before
hours of generation."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

#: what the code imports from each dependency, and the first release that has it
NEEDED = [
    ("datasets", "4.0", "datasets", "List"),
    ("diffusers", "0.35", "diffusers.models.transformers.transformer_flux", "FluxAttnProcessor"),
    ("transformers", "5.0", "transformers", "ViTImageProcessor"),
    ("huggingface-hub", "2.0", "huggingface_hub", "HfApi.upload_folder"),  # 2.0: several commits, resumable
    ("torch", "2.5", "torch", "ops.aten._scaled_dot_product_flash_attention_for_cpu"),
    ("gradio", "6.0", "gradio", "Blocks"),
    ("lazy-loader", "0.4", "lazy_loader", "attach"),
]


def lower_bounds() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["demo"]]
    bounds = {}
    for requirement in map(Requirement, requirements):
        floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
        bounds[requirement.name] = max(floors)
    return bounds


@pytest.mark.parametrize(("distribution", "first", "module", "symbol"), NEEDED)
def test_pins_admit_only_versions_with_what_the_code_uses(distribution, first, module, symbol):
    assert lower_bounds()[distribution] >= Version(first), f"raise the pin of {distribution} to {first}"
    found = importlib.import_module(module)
    for part in symbol.split("."):
        found = getattr(found, part)


def test_peft_is_not_required_and_the_license_ships():
    assert "peft" not in lower_bounds()
    assert (ROOT / "LICENSE").read_text().startswith("Copyright") and "Apache License" in (
        ROOT / "LICENSE"
    ).read_text()


def test_metrics_and_help_import_in_about_the_time_of_torch():
    """Import times as ratios to ``import torch`` in the same fresh process (not absolute seconds)."""
    script = (
        "import time; start = time.perf_counter(); import torch; torch_s = time.perf_counter() - start;"
        "import free_atm.metrics; metrics_s = time.perf_counter() - start - torch_s;"
        "from free_atm.cli import build_parser; build_parser().format_help();"
        "help_s = time.perf_counter() - start - torch_s - metrics_s;"
        "import sys; print(metrics_s / torch_s, help_s / torch_s, 'diffusers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, check=True)
    metrics, help_, diffusers_loaded = done.stdout.split()
    assert float(metrics) < 0.5 and diffusers_loaded == "False"  # the metric needs no pipeline family
    assert float(help_) < 3.0  # --help builds every command's options (accelerate, datasets), no model


CONTRASTIVE_USER = """
import json
import sys
from transformers import AutoImageProcessor, AutoModel, pipeline
from PIL import Image

model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained(sys.argv[1] + "/backbone")
features = pipeline("image-feature-extraction", model=sys.argv[1] + "/backbone")(Image.new("RGB", (50, 40), "red"))
pixels = processor(Image.new("RGB", (50, 40), "red"), return_tensors="pt").pixel_values
print(json.dumps([type(model).__name__, list(pixels.shape), float(pixels.max()), len(features[0])]))
"""


def test_a_contrastive_model_folder_loads_with_the_stock_auto_classes(tmp_path):
    """The whole model (as trainers and checkpoints save it) with ``AutoModel`` in a process that did not
    import free_atm, and the backbone's image processor with ``AutoImageProcessor`` and ``pipeline``."""
    import torch
    from transformers import ResNetConfig

    from free_atm.training.collate import collator_image_processor
    from free_atm.training.contrastive.model import InstanceContrastiveConfig, InstanceContrastiveModel

    torch.manual_seed(0)
    model = InstanceContrastiveModel(
        InstanceContrastiveConfig(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    )
    model.save_pretrained(tmp_path)
    model.backbone.save_pretrained(tmp_path / "backbone")
    collator_image_processor(32).save_pretrained(tmp_path / "backbone")
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"].startswith("modeling_")
    done = subprocess.run(
        [sys.executable, "-c", CONTRASTIVE_USER, str(tmp_path)], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    name, shape, top, channels = json.loads(done.stdout.strip().splitlines()[-1])
    assert name == "InstanceContrastiveModel"
    assert shape == [1, 3, 32, 32] and top == pytest.approx(1.0) and channels == 16  # the backbone's widths
