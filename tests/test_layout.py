"""The library's packages import downward only: each package may import those listed below it here, never
one above, so the data flow reads top to bottom and no package depends on one that depends on it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "free_atm"

#: bottom first; a unit is a subpackage or a top-level module of free_atm
LAYERS = (
    "seeds",
    "paths",
    "usage",
    "run_settings",
    "tokens",
    "attention",
    "pixel_refinement",
    "masks",
    "confidence",
    "visualize",
    "metrics",
    "diffusion",
    "testing",
    "prompts",
    "data",
    "world",
    "models",
    "generation",
    "training",
    "finetuning",
    "features",
    "evaluation",
    "demo",
    "cli",
    "__main__",
)


def unit_of(module: str) -> str:
    """``free_atm.data.schema`` -> ``data``."""
    return module.split(".")[1]


def imports(path: Path, library: Path = LIBRARY) -> set[str]:
    """The free_atm modules imported by the module at ``path`` (relative imports resolved)."""
    package = ["free_atm", *path.relative_to(library).parent.parts]  # relative imports start from here
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = (
                    [".".join([*base, node.module])]
                    if node.module
                    else [".".join([*base, a.name]) for a in node.names]
                )
            else:
                names = [node.module or ""]
            found.update(n for n in names if n.startswith("free_atm."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("free_atm."))
    return found


def upward_imports(library: Path = LIBRARY) -> list[str]:
    """Every import of a unit from a unit below it, as a readable line."""
    rank = {unit: k for k, unit in enumerate(LAYERS)}
    found = []
    for path in sorted(library.rglob("*.py")):
        if path == library / "__init__.py":
            continue  # the package's face hands names on from below
        source = unit_of(".".join(["free_atm", *path.relative_to(library).with_suffix("").parts]))
        for target in sorted(imports(path, library)):
            unit = unit_of(target)
            if unit != source and rank[unit] > rank[source]:
                found.append(f"{path.relative_to(library.parent)} imports {target} ({source} is below {unit})")
    return found


def test_every_unit_of_the_library_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in LIBRARY.iterdir() if p.suffix == ".py" or p.is_dir()}
    units -= {"__init__", "__pycache__"}
    assert units - set(LAYERS) == set(), "place the new package in LAYERS"


def test_no_package_imports_upward():
    assert upward_imports() == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself: a module of ``world`` that imports ``models`` is reported, downward ones are not."""
    fake = tmp_path / "free_atm"
    (fake / "world").mkdir(parents=True)
    (fake / "models" / "shapes").mkdir(parents=True)
    (fake / "world" / "render.py").write_text("from ..models import load_pipeline\nfrom ..seeds import derive_seed\n")
    (fake / "models" / "shapes" / "architecture.py").write_text("from ...world.render import render_scene\n")
    assert upward_imports(fake) == ["free_atm/world/render.py imports free_atm.models (world is below models)"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("world/dataset.py", {"free_atm.data.schema", "free_atm.masks", "free_atm.world.render"}),
        ("models/shapes/architecture.py", {"free_atm.diffusion.clip_tokenizer", "free_atm.world.render"}),
    ],
)
def test_relative_imports_resolve(path, expected):
    assert expected <= imports(LIBRARY / path)
