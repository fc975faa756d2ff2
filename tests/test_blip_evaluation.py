"""Held-out retrieval with position captions: the scenes' layouts and captions against their pixels, and
the command and the callback against the metric computed on the pretraining model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from free_atm.training.blip.evaluation import evaluate_retrieval, positional_retrieval_set
from free_atm.world.render import COLOURS

PROMPT = re.compile(r"The (\w+) (\w+) is in block (\d+)\.")


def block_of_pixels(image: np.ndarray, colour: str, grid: int = 3) -> int:
    """The block of the box centre of the pixels painted ``colour``, by hand: rows and columns of the
    grid counted from the top left, from 1."""
    ys, xs = np.nonzero((image == COLOURS[colour]).all(-1))
    centre_x, centre_y = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    height, width = image.shape[:2]
    column, row = min(int(centre_x * grid // width), grid - 1), min(int(centre_y * grid // height), grid - 1)
    return row * grid + column + 1


def test_each_layout_is_a_mirror_captioned_with_the_blocks_its_pixels_show():
    scenes = positional_retrieval_set(16, size=48)
    assert len(scenes.images) == len(scenes.captions) == len(scenes.scenes) > 16
    for index in range(16):
        group = [i for i, s in enumerate(scenes.scenes) if s == index]
        assert 1 <= len(group) <= 4
        first = scenes.images[group[0]]
        mirrors = [first, first[:, ::-1], first[::-1], first[::-1, ::-1]]
        plain = scenes.captions[group[0]].split(". ")[0]
        assert len({scenes.captions[i] for i in group}) == len(group)  # no caption names two images
        for i in group:
            assert any(np.array_equal(scenes.images[i], mirror) for mirror in mirrors)
            assert scenes.captions[i].startswith(plain + ". ")  # same objects, same plain caption
            prompts = PROMPT.findall(scenes.captions[i])
            assert len(prompts) == plain.count(" and ") + plain.count(", ") + 1  # every object placed
            for colour, _, block in prompts:
                assert int(block) == block_of_pixels(scenes.images[i], colour)
    # groups of several layouts are what makes position matter: most scenes keep more than one
    assert len(scenes.images) >= 2 * 16
    with pytest.raises(ValueError, match="a positive number of scenes, got 0"):
        positional_retrieval_set(0)


def tiny_blip(tmp_path):
    """A tiny new BLIP, its retrieval export and processor saved as ``train_blip.py`` lays them out."""
    from transformers import BlipImageProcessor, BlipProcessor

    from free_atm.training.blip import BlipForPretraining, blip_config, retrieval_export, train_caption_tokenizer

    texts = positional_retrieval_set(8, size=32).captions
    tokenizer = train_caption_tokenizer(texts, vocab_size=120, max_length=96)
    torch.manual_seed(0)
    model = BlipForPretraining(blip_config(tokenizer, image_size=32, hidden_size=32, num_layers=1, num_heads=2))
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    retrieval_export(model).save_pretrained(tmp_path / "retrieval")
    processor.save_pretrained(tmp_path / "retrieval")
    return model.eval(), processor


def test_retrieval_command_measures_the_export_as_the_pretraining_model_scores(tmp_path, capsys):
    from free_atm.cli import main
    from free_atm.metrics import retrieval_recalls
    from free_atm.training.blip.retrieval import retrieval_scores

    model, processor = tiny_blip(tmp_path)
    main(["retrieval", str(tmp_path), "--scenes", "6", "--k", "4"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scenes = positional_retrieval_set(6, size=32)
    assert printed["images"] == len(scenes.images) and printed["grid"] == 3
    # the same recalls from the pretraining model's own scores of the processed scenes
    text = {"text": scenes.captions, "padding": "longest", "truncation": True}
    inputs = processor(images=scenes.images, **text, return_tensors="pt")
    forward, backward = retrieval_scores(model, inputs.pixel_values, inputs.input_ids, inputs.attention_mask, k=4)
    pairs = np.arange(len(scenes.captions))
    expected = retrieval_recalls(forward.numpy(), pairs, text_to_image_scores=backward.numpy())
    for name, value in expected.items():
        assert printed[name] == pytest.approx(value, abs=1e-6), name
    assert evaluate_retrieval(model, processor, scenes, k=4) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["retrieval", "./no-blip"], "model folder ./no-blip does not exist"),
        (["retrieval", "{tmp}", "--scenes", "0"], "--scenes must be in [1, 10,000], got 0"),
        (["retrieval", "{tmp}", "--k", "-1"], "--k must be in [1, 1,024], got -1"),
        (["retrieval", "{tmp}", "--grid", "1000"], "--grid must be in [1, 16], got 1000"),
    ],
)
def test_retrieval_command_rejects_bad_input(arguments, message, tmp_path, capsys, monkeypatch):
    from free_atm.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([a.replace("{tmp}", str(tmp_path)) for a in arguments])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error and message in error, error
