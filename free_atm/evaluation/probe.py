"""The shapes model's training probe: a fixed set of held-out captions large enough to tell recipes apart,
the judge's breakdown of a generator's images of them, and the curve of those breakdowns over training.

Pitfall: a probe of 64 captions has a standard error near 0.06 on a share like prompt fidelity, as large
as the differences between the recipes it was used to choose. The probe here draws at least 192 one-object
and 192 multi-object captions (standard error about 0.035 on each half, 0.025 on the whole), from seeds
disjoint from training (seed 0) and from the mask-quality benchmark's splits (1,000 and 2,000).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..seeds import derive_seed
from ..world.render import Scene, render_scene
from .fidelity import draw_scenes, fidelity_breakdown
from .judge import ShapeClassifier

#: the seed of the probe's scenes (``derive_seed(PROBE_SEED, i)``)
PROBE_SEED = 4_000
#: the measures the probe's curve plots, in its legend's order
CURVE_MEASURES = (
    "prompt_fidelity",
    "one_object_fidelity",
    "kind_given_colour_one_object",
    "colour_present",
    "binding",
)


def probe_scenes(per_group: int = 192, seed: int = PROBE_SEED) -> list[Scene]:
    """The first ``per_group`` one-object scenes and the first ``per_group`` scenes of two or three objects
    among ``derive_seed(seed, i)``, i = 0, 1, ...: one-object scenes first, each group in seed order."""
    if per_group < 1:
        raise ValueError(f"per_group must be positive, got {per_group}")
    single: list[Scene] = []
    several: list[Scene] = []
    index = 0
    while len(single) < per_group or len(several) < per_group:
        scene = render_scene(derive_seed(seed, index))
        group = single if len(scene.shapes) == 1 else several
        if len(group) < per_group:
            group.append(scene)
        index += 1
    return single + several


def probe_breakdown(pipe, scenes: list[Scene], classifier: ShapeClassifier, batch_size: int = 32, **sampling) -> dict:
    """The judge's breakdown (:func:`free_atm.evaluation.fidelity.fidelity_breakdown`) of ``pipe``'s images of
    ``scenes`` (noise seeded by each scene), plus ``one_object_fidelity``. ``sampling`` (steps,
    guidance_scale, ...) goes to :func:`free_atm.evaluation.fidelity.draw_scenes`. The masks are not judged,
    so they are cut from the raw maps whatever refinement the pipeline saves."""
    raw = {"refinement": "none", "pixel_refinement": 0}
    images, _ = draw_scenes(pipe, scenes, {"raw": raw}, batch_size=batch_size, **sampling)
    breakdown = fidelity_breakdown(images, scenes, classifier)
    breakdown["one_object_fidelity"] = breakdown["prompt_fidelity_by_count"].get(1)
    return {key: value for key, value in breakdown.items() if key not in ("found_object_miou", "images")}


#: the curve file's name, in a run folder and in a candidate folder
CURVE_FILE = "probe.jsonl"


def append_to_curve(path: str | Path, step: int, breakdown: dict) -> None:
    """Add one probe result as a JSON line ``{"step": step, **breakdown}`` to the curve file ``path``; a line
    for a step already there (a resumed run probing the same step again) replaces it."""
    path = Path(path)
    kept = [line for line in read_curve(path) if line["step"] != step] if path.exists() else []
    write_curve(path, [*kept, {"step": step, **breakdown}])


def write_curve(path: str | Path, lines: list[dict]) -> None:
    """Write the probe results ``lines`` (each ``{"step": ..., **breakdown}``) to the curve file ``path`` in
    step order."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in sorted(lines, key=lambda line: line["step"])))
    tmp.replace(path)  # a run killed mid-write keeps the previous curve whole


def read_curve(path: str | Path) -> list[dict]:
    """The probe results in a curve file, in step order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curve(path: str | Path, out: str | Path, measures: tuple[str, ...] = CURVE_MEASURES) -> None:
    """Draw the ``measures`` of a curve file against the training step into the image ``out`` (matplotlib,
    the ``plots`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = read_curve(path)
    if not curve:
        raise ValueError(f"curve file {path} holds no probe result")
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    steps = [line["step"] for line in curve]
    for measure in measures:
        axis.plot(steps, [line.get(measure) for line in curve], marker="o", markersize=3, label=measure)
    axis.set_xlabel("UNet training step")
    axis.set_ylabel("share (judge)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
