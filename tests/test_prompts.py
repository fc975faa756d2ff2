"""Prompts: label space, templates, prompt files and rewriting."""

from __future__ import annotations

import json
import pickle

import pytest

from free_atm.prompts import (
    ObjectPrompt,
    article,
    imagenet_classes,
    match_vocabulary,
    plural,
    read_prompt_file,
    rewrite_prompts,
    template_prompt,
)
from free_atm.tokens import find_phrase


def test_label_space_is_imagenet_1k():
    classes = imagenet_classes()
    assert len(classes) == 1000 and [c.index for c in classes] == list(range(1000))
    assert classes[0].wnid == "n01440764" and classes[0].name == "tench"
    assert {c.group for c in classes} == {"animal", "vehicle", "food", "object", "plant", "person", "scene"}
    assert classes[817].name == "sports car" and classes[817].group == "vehicle"
    assert classes[963].name == "pizza" and classes[963].group == "food"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("bus", "buses"),
        ("butterfly", "butterflies"),
        ("monkey", "monkeys"),
        ("mouse", "mice"),
        ("sports car", "sports cars"),
        ("box", "boxes"),
        ("church", "churches"),
    ],
)
def test_plural(word, expected):
    assert plural(word) == expected


@pytest.mark.parametrize(("word", "expected"), [("apple", "an"), ("dog", "a"), ("unicycle", "a"), ("hourglass", "an")])
def test_article(word, expected):
    assert article(word) == expected


def test_templates_are_deterministic_and_carry_their_objects():
    prompts = [template_prompt(0, i) for i in range(200)]
    assert [str(p) for p in prompts] == [str(template_prompt(0, i)) for i in range(200)]
    assert str(template_prompt(1, 0)) != str(prompts[0]) or str(template_prompt(1, 1)) != str(prompts[1])
    for prompt in prompts:
        assert prompt.objects and len(prompt.objects) == len(prompt.labels)
        for phrase in prompt.objects:
            assert find_phrase(prompt, phrase), (prompt, phrase)
        assert " is " in prompt or " are " in prompt or imagenet_classes()[prompt.labels[0]].group == "scene"
    plurals = [p for p in prompts if " are " in p]
    assert plurals and all(p.split()[0] in ("Two", "Three", "Several") for p in plurals)
    assert any(len(p.objects) == 2 for p in prompts)


def test_object_prompt_is_a_str_that_pickles():
    prompt = ObjectPrompt("a dog with a ball", ["dog", "ball"], [1, 2])
    again = pickle.loads(pickle.dumps(prompt))
    assert again == "a dog with a ball" and again.objects == ["dog", "ball"] and again.labels == [1, 2]


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("a teddy bear next to a dog\n\nA red sports car\n")
    prompts = read_prompt_file(tmp_path / "p.txt", vocabulary=["teddy bear", "bear", "dog", "sports car", "car"])
    assert [p.objects for p in prompts] == [["teddy bear", "dog"], ["sports car"]]
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "a cat on a mat", "objects": ["cat", "mat"]}) + "\n")
    assert read_prompt_file(tmp_path / "p.jsonl")[0].objects == ["cat", "mat"]
    (tmp_path / "p.csv").write_text('prompt,objects\n"a cat, a dog",cat;dog\n')
    assert read_prompt_file(tmp_path / "p.csv")[0].objects == ["cat", "dog"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"prompt": "a cat"\n', r"bad.jsonl:1: not valid JSON"),
        ("bad.jsonl", '{"text": "a cat"}\n', r"bad.jsonl:1: each line needs a string 'prompt'"),
        ("bad.csv", "text\na cat\n", r"the CSV needs a 'prompt' column"),
        ("bad.txt", "a landscape\n", r"bad.txt:1: no object found in prompt 'a landscape'"),
        ("bad.jsonl", '{"prompt": "a cat", "objects": ["dog"]}\n', r"object 'dog' does not occur in prompt 'a cat'"),
        ("bad.yaml", "x", r"must end in .txt, .jsonl or .csv"),
        ("empty.txt", "\n\n", r"holds no prompt"),
    ],
)
def test_bad_prompt_files_are_clear_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_prompt_file(tmp_path / name, vocabulary=["cat"])


def test_match_vocabulary_prefers_longest_phrases():
    assert match_vocabulary("a teddy bear and a bear", ["bear", "teddy bear"]) == ["teddy bear", "bear"]


def test_rewriting_keeps_object_words_or_falls_back():
    prompts = [ObjectPrompt("A dog is in a meadow", ["dog"]), ObjectPrompt("A cat is on a table", ["cat"])]
    rewritten = rewrite_prompts(prompts, lambda instruction: "A happy dog runs through tall grass in a meadow.")
    assert str(rewritten[0]) == "A happy dog runs through tall grass in a meadow." and rewritten[0].objects == ["dog"]
    assert rewritten[1] is prompts[1]  # the rewrite lost "cat"


def test_local_rewriter_runs_a_local_model(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from free_atm.prompts import local_rewriter

    vocab = {w: i for i, w in enumerate(["<unk>", "a", "dog", "is", "in", "meadow", "Ġ", "."])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(tmp_path)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(vocab), n_layer=1, n_head=2, n_embd=16, n_positions=256)
    ).save_pretrained(tmp_path)
    rewriter = local_rewriter(str(tmp_path), max_new_tokens=5)
    prompts = [ObjectPrompt("A dog is in a meadow", ["dog"])]
    result = rewrite_prompts(prompts, rewriter)[0]
    assert result.objects == ["dog"] and find_phrase(result, "dog")  # rewritten or kept, the object survives
