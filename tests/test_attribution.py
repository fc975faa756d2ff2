"""Maps of words the prompt does not contain, against a hand-written softmax over the word's own keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import generator, normalize

PROMPT = "a red circle on the grass"
CALL = dict(num_inference_steps=2, height=64, width=64, output_type="np")


class WordAttention:
    """At every cross-attention layer call, the conditional half's head-mean of ``softmax(Q K^T / sqrt(d))``
    over the 77 keys of ``states`` (a word encoded alone), column ``position``, resized to 32 x 32."""

    def __init__(self, unet, states: torch.Tensor, position: int) -> None:
        self.states, self.position, self.maps = states, position, []
        layers = [m for name, m in unet.named_modules() if name.endswith("attn2")]
        self.handles = [layer.register_forward_pre_hook(self.record) for layer in layers]

    def record(self, attn, args) -> None:
        hidden = args[0][args[0].shape[0] // 2 :]
        heads, dim = attn.heads, attn.to_q.out_features // attn.heads
        query = attn.to_q(hidden).view(1, -1, heads, dim).transpose(1, 2).double()
        key = attn.to_k(self.states).view(1, -1, heads, dim).transpose(1, 2).double()
        probs = torch.softmax(query @ key.transpose(-1, -2) / dim**0.5, -1)[..., self.position].mean(1)  # (1, N)
        side = int(probs.shape[-1] ** 0.5)
        self.maps.append(F.interpolate(probs.view(1, 1, side, side), size=(32, 32), mode="bilinear")[0, 0])

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def test_an_absent_word_is_mapped_from_its_own_keys(sd_pipe):
    ids = sd_pipe.tokenizer("dog", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert sd_pipe.tokenizer.convert_ids_to_tokens(ids[0, 1].item()).startswith("dog")
    with torch.no_grad():
        states = sd_pipe.text_encoder(ids)[0]
    reference = WordAttention(sd_pipe.unet, states, position=1)
    try:
        out = sd_pipe(PROMPT, objects=["red circle", "dog"], allow_absent_objects=True, generator=generator(), **CALL)
    finally:
        reference.remove()
    assert len(reference.maps) == 2 * 7  # two steps, seven cross-attention layers
    expected = normalize(torch.stack(reference.maps).mean(0).float()[None])[0]
    torch.testing.assert_close(torch.from_numpy(out.attention_maps[0][1]), expected, atol=1e-5, rtol=1e-4)
    assert out.objects == [["red circle", "dog"]] and out.masks[0].shape == (2, 64, 64)


def test_an_absent_word_changes_neither_the_image_nor_the_prompt_words_maps(sd_pipe):
    alone = sd_pipe(PROMPT, objects=["red circle"], generator=generator(), **CALL)
    both = sd_pipe(PROMPT, objects=["dog", "red circle"], allow_absent_objects=True, generator=generator(), **CALL)
    np.testing.assert_array_equal(both.images, alone.images)
    np.testing.assert_array_equal(both.attention_maps[0][1], alone.attention_maps[0][0])


def test_without_the_flag_an_absent_word_is_an_error_naming_it(sd_pipe):
    with pytest.raises(ValueError, match="object 'dog' does not occur in prompt 'a red circle on the grass'"):
        sd_pipe(PROMPT, objects=["red circle", "dog"], **CALL)


def test_sdxl_maps_absent_words_through_both_encoders(sdxl_pipe):
    out = sdxl_pipe(PROMPT, objects=["red circle", "dog"], allow_absent_objects=True, generator=generator(), **CALL)
    maps = out.attention_maps[0]
    assert maps.shape[0] == 2 and np.isfinite(maps).all() and maps[1].max() == 1.0
