"""The shapes model's training probe: its captions, its breakdown per kind and size against a hand count, its
curve; and the edge weighting of the denoising loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from free_atm.evaluation.fidelity import fidelity_breakdown, object_size
from free_atm.evaluation.judge import shape_classifier
from free_atm.evaluation.probe import PROBE_SEED, append_to_curve, plot_curve, probe_scenes, read_curve
from free_atm.models.shapes.architecture import training_scheduler
from free_atm.models.shapes.denoising import boundary_weights, denoising_loss
from free_atm.seeds import derive_seed
from free_atm.world import render_scene


def test_the_probe_draws_each_group_in_seed_order():
    scenes = probe_scenes(5)
    assert [len(s.shapes) == 1 for s in scenes] == [True] * 5 + [False] * 5
    seeds = [derive_seed(PROBE_SEED, i) for i in range(200)]
    singles = [s for s in seeds if len(render_scene(s).shapes) == 1][:5]
    several = [s for s in seeds if len(render_scene(s).shapes) > 1][:5]
    assert [s.seed for s in scenes] == singles + several
    with pytest.raises(ValueError, match="per_group must be positive, got 0"):
        probe_scenes(0)


def test_the_breakdown_per_kind_and_size_against_a_hand_count():
    scenes = probe_scenes(40)[:40]  # one-object scenes
    right = scenes[0]
    # a scene asking for right's colour in another kind: drawn as right's image, the colour is there, the kind not
    wrong = next(s for s in scenes[1:] if s.colours == right.colours and s.shapes != right.shapes)
    absent = next(s for s in scenes[1:] if s.colours != right.colours and s is not wrong)
    blank = np.full_like(right.image, 128)  # gray: no object colour at all
    result = fidelity_breakdown([right.image, right.image, blank], [right, wrong, absent], shape_classifier())
    assert result["colour_present"] == pytest.approx(2 / 3)
    assert result["kind_given_colour"] == 0.5 and result["kind_given_colour_one_object"] == 0.5
    by_kind = {shape: None for shape in result["kind_given_colour_by_kind"]}
    by_kind[right.shapes[0]] = 1.0
    by_kind[wrong.shapes[0]] = 0.0
    assert result["kind_given_colour_by_kind"] == by_kind
    sizes: dict[str, list[float]] = {}
    for scene, found in ((right, 1.0), (wrong, 0.0)):
        sizes.setdefault(object_size(int(scene.masks[0].sum())), []).append(found)
    expected = {size: float(np.mean(sizes[size])) if size in sizes else None for size in ("small", "medium", "large")}
    assert result["kind_given_colour_by_size"] == expected


def test_object_sizes_split_at_their_limits():
    assert [object_size(a) for a in (0, 249, 250, 449, 450, 4096)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]


def test_the_curve_keeps_one_line_per_step_and_plots(tmp_path):
    curve = tmp_path / "probe.jsonl"
    append_to_curve(curve, 200, {"prompt_fidelity": 0.2})
    append_to_curve(curve, 100, {"prompt_fidelity": 0.1})
    append_to_curve(curve, 200, {"prompt_fidelity": 0.3})  # a resumed run probing step 200 again
    assert read_curve(curve) == [{"step": 100, "prompt_fidelity": 0.1}, {"step": 200, "prompt_fidelity": 0.3}]
    plot_curve(curve, tmp_path / "curve.png", ("prompt_fidelity",))
    assert Image.open(tmp_path / "curve.png").size == (768, 432)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="holds no probe result"):
        plot_curve(tmp_path / "empty.jsonl", tmp_path / "none.png")


def test_boundary_weights_weigh_half_covered_cells():
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 0] = torch.tensor([[1.0, 0.5], [0.0, 0.25]])
    masks[0, 1, 1, 0] = 0.5
    weights = boundary_weights(masks, 4.0)
    expected = torch.tensor([[[1.0, 1 + 4 * 1.0], [1 + 4 * 1.0, 1 + 4 * 0.75]]])
    torch.testing.assert_close(weights, expected)


def test_the_edge_weighted_denoising_loss_against_the_formula():
    scheduler = training_scheduler()
    generator = torch.Generator().manual_seed(0)
    clean, noise, prediction = (torch.randn(2, 3, 4, 4, generator=generator) for _ in range(3))
    cells = torch.rand(2, 4, 4, generator=generator) + 0.5
    t = torch.tensor([10, 700])
    errors = (prediction.double() - noise.double()) ** 2  # epsilon target
    w = cells.double()[:, None]
    per_sample = (errors * w).mean((1, 2, 3)) / w.mean((1, 2, 3))
    alpha_bar = scheduler.alphas_cumprod[t].double()
    snr = alpha_bar / (1 - alpha_bar)
    expected = (per_sample * torch.clamp(snr, max=5.0) / snr).mean()
    loss = denoising_loss(scheduler, prediction, clean, noise, t, 5.0, cells)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # uniform cell weights are the unweighted loss
    ones = denoising_loss(scheduler, prediction, clean, noise, t, 5.0, torch.ones(2, 4, 4))
    assert ones.item() == pytest.approx(denoising_loss(scheduler, prediction, clean, noise, t, 5.0).item(), rel=1e-6)
