"""The shapes world's judge (colour regions, shape kinds) and the fidelity breakdown, on rendered scenes
whose truth is exact."""

from __future__ import annotations

import numpy as np
import pytest

from free_atm.evaluation.fidelity import fidelity_breakdown, masks_miou, object_ious, scenes_split
from free_atm.evaluation.judge import (
    colour_regions,
    judge_image,
    objects_present,
    shape_classifier,
    train_shape_classifier,
)
from free_atm.world import COLOURS, SHAPES
from free_atm.world.render import TEXTURES


@pytest.fixture(scope="module")
def judge():
    return shape_classifier()


@pytest.fixture(scope="module")
def scenes():
    return scenes_split(9_100, 150)  # seeds no judge or model was trained on


def test_colour_regions_are_the_exact_masks_on_every_texture(scenes):
    assert {s.texture for s in scenes} == set(TEXTURES)
    for scene in scenes:
        regions = colour_regions(scene.image)
        for colour, mask in zip(scene.colours, scene.masks):
            np.testing.assert_array_equal(regions[colour], mask, err_msg=f"{colour} in {scene.caption}")
        for colour in set(COLOURS) - set(scene.colours):
            assert not regions[colour].any(), (colour, scene.caption)


def test_colour_regions_ignore_colours_far_from_the_palette():
    image = np.full((8, 8, 3), (0, 255, 255), np.uint8)  # cyan: 180+ from every palette colour
    assert not any(region.any() for region in colour_regions(image).values())


def test_shipped_judge_names_the_kinds_of_rendered_shapes(judge, scenes):
    truth = [shape for s in scenes for shape in s.shapes]
    predicted = [kind for s in scenes for kind in judge.predict(s.masks)]
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    assert accuracy >= 0.95, accuracy
    # every kind is recognised, not only the common ones
    for kind in SHAPES:
        hits = [p == t for p, t in zip(predicted, truth) if t == kind]
        assert np.mean(hits) >= 0.85, (kind, np.mean(hits))


def test_judge_tolerates_a_pixel_of_edge_error(judge, scenes):
    from scipy.ndimage import binary_dilation

    single = [s for s in scenes if len(s.shapes) == 1]
    grown = [judge.predict(np.stack([binary_dilation(m) for m in s.masks]))[0] for s in single]
    assert np.mean([g == s.shapes[0] for g, s in zip(grown, single)]) >= 0.9


def test_objects_present_on_a_scene_and_not_on_a_blank_or_recoloured_one(judge):
    scene = next(s for s in scenes_split(9_200, 50) if len(s.shapes) == 1 and s.masks[0].sum() > 150)
    assert objects_present(scene.image, scene.colours, scene.shapes, judge)
    blank = np.full_like(scene.image, 128)
    assert not objects_present(blank, scene.colours, scene.shapes, judge)
    other = next(c for c in COLOURS if c != scene.colours[0])
    recoloured = scene.image.copy()
    recoloured[scene.masks[0]] = COLOURS[other]
    assert not objects_present(recoloured, scene.colours, scene.shapes, judge)
    assert objects_present(recoloured, [other], scene.shapes, judge)


def _two_object_scene():
    return next(s for s in scenes_split(9_300, 200) if len(s.shapes) == 2 and min(m.sum() for m in s.masks) > 120)


def test_breakdown_counts_a_swap_as_a_binding_failure(judge):
    scene = _two_object_scene()
    swapped = scene.image.copy()  # each shape painted in the other's colour
    swapped[scene.masks[0]] = COLOURS[scene.colours[1]]
    swapped[scene.masks[1]] = COLOURS[scene.colours[0]]
    judgement = judge_image(swapped, scene.colours, judge)
    assert judgement.colour_present == [True, True]
    assert judgement.kinds == [scene.shapes[1], scene.shapes[0]]

    result = fidelity_breakdown([scene.image, swapped], [scene, scene], judge)
    assert result["prompt_fidelity"] == 0.5 and result["prompt_fidelity_by_count"] == {2: 0.5}
    assert result["colour_present"] == 1.0
    assert result["kind_given_colour"] == 0.5  # 2 of the 4 present objects have their kind
    assert result["binding"] == 0.5  # all 4 named kinds are drawn; 2 in their own colour
    assert result["found_object_miou"] is None


def test_breakdown_of_a_missing_colour_and_of_masks(judge):
    scene = _two_object_scene()
    missing = scene.image.copy()
    missing[scene.masks[1]] = 128
    masks = scene.masks.copy()
    half = masks[0] & (np.arange(64)[None, :] < np.median(np.nonzero(masks[0])[1]))
    masks[0] = half
    result = fidelity_breakdown([missing], [scene], judge, [masks])
    assert result["colour_present"] == 0.5 and result["kind_given_colour"] == 1.0
    assert result["prompt_fidelity"] == 0.0
    # binding counts only kinds that are drawn: the first object's, in its own colour
    assert result["binding"] == 1.0
    # the one found object's mask covers the part of it left of its median column
    assert result["found_object_miou"] == pytest.approx(half.sum() / scene.masks[0].sum())


def test_object_ious_are_each_objects_overlap_image_by_image():
    truth = np.zeros((2, 4, 4), bool)
    truth[0, :2] = True  # 8 pixels
    truth[1, 2:, 2:] = True  # 4 pixels
    mask = truth.copy()
    mask[0, 2] = True  # 4 more pixels: 8 / 12
    mask[1] = False  # missed: 0 / 4
    other = np.ones((1, 4, 4), bool)  # a second image's one object, all of it: 16 / 16
    ious = object_ious([mask, other], [truth, other.copy()])
    assert ious == pytest.approx([8 / 12, 0.0, 1.0])
    assert masks_miou([mask, other], [truth, other.copy()]) == pytest.approx((8 / 12 + 1) / 3)


def test_breakdown_rejects_mismatched_lengths(judge, scenes):
    with pytest.raises(ValueError, match="got 1 images, 2 scenes"):
        fidelity_breakdown([scenes[0].image], scenes[:2], judge)


def test_training_the_judge_learns_the_kinds():
    judge = train_shape_classifier(num_scenes=300, steps=150)
    check = scenes_split(9_400, 60)
    accuracy = np.mean([p == t for s in check for p, t in zip(judge.predict(s.masks), s.shapes)])
    assert accuracy >= 0.6, accuracy  # 5 kinds: chance is 0.2


@pytest.mark.parametrize(
    ("values", "message"),
    [({"num_scenes": 0}, "num_scenes must be positive, got 0"), ({"steps": -3}, "steps must be positive, got -3")],
)
def test_training_the_judge_rejects_empty_settings_before_rendering(values, message):
    with pytest.raises(ValueError, match=message):
        train_shape_classifier(**values)
