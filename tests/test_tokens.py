"""Object phrases to token positions, against the real 49,408-token CLIP vocabulary."""

from __future__ import annotations

import pytest
import torch

from free_atm.diffusion.clip_tokenizer import clip_tokenizer_from_words
from free_atm.tokens import find_phrase, object_token_indices, object_token_weights


def spelled(tokenizer, prompt, indices):
    """The text that the tokens at ``indices`` spell, read back from the vocabulary."""
    ids = tokenizer(prompt, truncation=True, max_length=77)["input_ids"]
    return "".join(tokenizer.convert_ids_to_tokens([ids[i] for i in indices])).replace("</w>", " ").strip()


def test_real_vocabulary_matches_clip_ids(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    # "a photo of a cat" in the published CLIP vocabulary
    assert clip_tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_multi_token_word(clip_tokenizer):
    prompt = "a hippopotamus in the river"
    indices = object_token_indices(clip_tokenizer, prompt, "hippopotamus")
    assert len(indices) == 3 and indices == [2, 3, 4]  # hippo + potam + us, after <start> and "a"
    assert spelled(clip_tokenizer, prompt, indices) == "hippopotamus"


def test_multi_word_phrase_case_and_plural(clip_tokenizer):
    prompt = "Two Teddy Bears and a DOG"
    bear = object_token_indices(clip_tokenizer, prompt, "teddy bear")
    assert spelled(clip_tokenizer, prompt, bear) == "teddy bears"
    assert spelled(clip_tokenizer, prompt, object_token_indices(clip_tokenizer, prompt, "dog")) == "dog"


def test_repeated_occurrences_all_count(clip_tokenizer):
    prompt = "a dog chases another dog"
    indices = object_token_indices(clip_tokenizer, prompt, "dog")
    assert indices == [2, 5] and spelled(clip_tokenizer, prompt, indices) == "dog dog"


def test_whole_words_only(clip_tokenizer):
    with pytest.raises(ValueError, match=r"object 'cat' does not occur in prompt 'a category of hotdogs'"):
        object_token_indices(clip_tokenizer, "a category of hotdogs", "cat")
    assert find_phrase("hotdogs and dogs", "dog") == [(12, 16)]


def test_truncated_object_is_an_error(clip_tokenizer):
    prompt = "a " + "very " * 80 + "small dog"
    with pytest.raises(ValueError, match=r"object 'dog' of prompt 'a very .* lies past the tokenizer's limit of 77"):
        object_token_indices(clip_tokenizer, prompt, "dog")
    assert object_token_indices(clip_tokenizer, prompt, "very")[-1] == 75  # the last kept position before <end>


def test_an_object_cut_by_the_truncation_is_an_error_not_its_first_words(clip_tokenizer):
    prompt = "a " + "very " * 72 + "small teddy bear"  # 'teddy' is the 75th and last kept token, 'bear' is cut
    assert object_token_indices(clip_tokenizer, prompt, "small") == [74]
    assert object_token_indices(clip_tokenizer, prompt, "teddy") == [75]
    with pytest.raises(ValueError, match=r"object 'teddy bear' of prompt .* lies across the tokenizer's limit"):
        object_token_indices(clip_tokenizer, prompt, "teddy bear")
    twice = "a teddy bear and " + "very " * 69 + "small teddy bear"  # a whole occurrence counts, the cut one not
    assert spelled(clip_tokenizer, twice, object_token_indices(clip_tokenizer, twice, "teddy bear")) == "teddy bear"


def test_weights_average_each_objects_tokens(clip_tokenizer):
    prompts = ["a hippopotamus and a dog", "a teddy bear"]
    weights = object_token_weights([(clip_tokenizer, prompts)], [["hippopotamus", "dog"], ["teddy bear"]], 77)
    assert weights.shape == (2, 77, 2)
    torch.testing.assert_close(weights.sum(1), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert weights[0, 2:5, 0].tolist() == pytest.approx([1 / 3] * 3)


def test_two_tokenizers_union_when_second_prompt_differs(clip_tokenizer):
    second = clip_tokenizer_from_words(["a", "photo", "of", "dog"])
    weights = object_token_weights(
        [(clip_tokenizer, ["a cat on a mat"]), (second, ["a photo of a dog"])], [["cat", "dog"]], 77
    )
    assert weights[0, :, 0].nonzero().flatten().tolist() == [2]  # "cat" only in the first prompt
    assert weights[0, :, 1].nonzero().flatten().tolist() == [5]  # "dog" only in the second
    with pytest.raises(ValueError, match="object 'horse' does not occur"):
        object_token_weights([(clip_tokenizer, ["a cat"]), (second, ["a dog"])], [["horse"]], 77)


def test_tokenizer_without_offsets_is_a_type_error(clip_tokenizer, monkeypatch):
    monkeypatch.setattr(type(clip_tokenizer), "is_fast", property(lambda self: False))
    with pytest.raises(TypeError, match="CLIPTokenizer gives no character offsets"):
        object_token_indices(clip_tokenizer, "a hippopotamus", "hippopotamus")


def test_tokenizer_from_words_spells_each_word_as_one_token():
    # "green" after "red" and "triangle" after "an": earlier words' merges ("re", "an") must not split them
    words = ["a", "an", "and", "red", "green", "triangle", "tree", "street"]
    tokenizer = clip_tokenizer_from_words(words)
    for word in words:
        assert tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False).input_ids) == [f"{word}</w>"]
    # unknown words still tokenize, into pieces that spell them
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("orange", add_special_tokens=False).input_ids)
    assert "".join(pieces).replace("</w>", "") == "orange" and len(pieces) > 1
