"""Words the prompt lacks on SD3 and Flux: concept tokens run by hand, in float64, through every block's own
modulation, projections, norms, attention and feed-forward, against the pipeline's maps; the images stay
bitwise those of the call without them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import generator, normalize
from diffusers.models.embeddings import apply_rotary_emb
from joint_reference import JointReference
from PIL import Image
from test_joint_capture import FLUX_CALL, GRID, LATENT, OBJECTS, PROMPTS, SD3_CALL, parent_of, positions

ABSENT = ["cat", "tree"]  # one token each in the tiny tokenizers, in neither prompt


def _blocks(transformer) -> list:
    return [*transformer.transformer_blocks, *getattr(transformer, "single_transformer_blocks", [])]


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _modulation(norm, temb: torch.Tensor, chunks: int) -> list[torch.Tensor]:
    return list(norm.linear(F.silu(temb)).chunk(chunks, dim=1))


def _heads(states: torch.Tensor, heads: int) -> torch.Tensor:  # (n, K, H * d) -> (n, H, K, d)
    return states.unflatten(-1, (heads, -1)).transpose(1, 2)


@torch.no_grad()
def _concept_maps(pipe, reference, tembs, rotaries, states, columns, method="attention") -> torch.Tensor:
    """``(n, A, h, w)``: each absent word's map, by hand from the reference's records, in float64; ``method``
    ``"concept"`` scores the image tokens' attention outputs against the concept tokens' (output space)."""
    model = copy.deepcopy(pipe.transformer).double()
    blocks = _blocks(model)
    n, per_call = len(PROMPTS), len(blocks)
    kept = []
    for call in range(len(reference.records) // per_call):
        tokens = model.context_embedder(states.double()).expand(n, -1, -1)
        for index, block in enumerate(blocks):
            record = reference.records[call * per_call + index]
            temb, attn = tembs[call * per_call + index].double(), block.attn
            image_keys, image_values = record["image_key"].double(), record["image_value"].double()
            double_stream = hasattr(block, "norm1_context")
            if double_stream and getattr(block, "context_pre_only", False):
                scale, shift = _modulation(block.norm1_context, temb, 2)
                normed = _layer_norm(tokens) * (1 + scale[:, None]) + shift[:, None]
            elif double_stream:
                shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = _modulation(
                    block.norm1_context, temb, 6
                )
                normed = _layer_norm(tokens) * (1 + scale_msa[:, None]) + shift_msa[:, None]
            else:
                shift_msa, scale_msa, gate_msa = _modulation(block.norm, temb, 3)
                normed = _layer_norm(tokens) * (1 + scale_msa[:, None]) + shift_msa[:, None]
            projections = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj) if double_stream else (
                attn.to_q, attn.to_k, attn.to_v)  # fmt: skip
            norms = (attn.norm_added_q, attn.norm_added_k) if double_stream else (attn.norm_q, attn.norm_k)
            query, key, value = (_heads(p(normed), attn.heads) for p in projections)
            query, key = norms[0](query), norms[1](key)
            if rotaries:  # Flux: every text position is 0, and so is every concept token's
                cos, sin = (r[:1].expand(key.shape[2], -1).double() for r in rotaries[call * per_call + index])
                query = apply_rotary_emb(query, (cos, sin))
                key = apply_rotary_emb(key, (cos, sin))
            scale_ = query.shape[-1] ** -0.5
            weights = (query @ torch.cat([image_keys, key], 2).transpose(-1, -2) * scale_).softmax(-1)
            out = (weights @ torch.cat([image_values, value], 2)).transpose(1, 2).flatten(2)
            scores = record["image_query"].double() @ key.transpose(-1, -2) * scale_  # (n, H, N, K)
            lse = record["lse"].double().unsqueeze(-1)
            if method == "concept":
                image_out = record["image_out"].double()
                scores = image_out @ _heads(out, attn.heads).transpose(-1, -2) * scale_
                lse = (image_out @ record["text_out"].double().transpose(-1, -2) * scale_).logsumexp(-1, keepdim=True)
            probs = scores.exp() / (lse.exp() + scores.exp())  # as one more key of the layer
            if record["repeat"] == 0:
                probs = probs.mean(1)
                maps = torch.stack([probs[..., idx].mean(-1) for idx in columns], 1).view(n, len(columns), *GRID)
                kept.append(F.interpolate(maps, size=LATENT, mode="bilinear", align_corners=False))
            if double_stream and not getattr(block, "context_pre_only", False):
                tokens = tokens + gate_msa[:, None] * attn.to_add_out(out)
                normed = _layer_norm(tokens) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
                tokens = tokens + gate_mlp[:, None] * block.ff_context(normed)
            elif not double_stream:
                mlp = block.act_mlp(block.proj_mlp(normed))
                tokens = tokens + gate_msa[:, None] * block.proj_out(torch.cat([out, mlp], 2))
    return torch.stack(kept).mean(0)


@pytest.mark.parametrize("path", ["kernel", "second-pass", "output-space"])
@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_absent_words_are_concept_tokens_through_every_block(family, path, request, monkeypatch):
    """With the attention kernel's log-sum-exp and values; (no kernel serving the call) from the second pass
    over the tapped projections; and in ConceptAttention's output space (``method="concept"``)."""
    import free_atm.attention.lse as lse

    pipe = request.getfixturevalue(f"{family}_pipe")
    if path == "second-pass":
        monkeypatch.setattr(lse, "attention_with_lse", lambda *args, **kwargs: None)
    method = "concept" if path == "output-space" else "attention"
    call = SD3_CALL if family == "sd3" else FLUX_CALL
    objects = [[*OBJECTS[0], ABSENT[0]], [ABSENT[1], *OBJECTS[1]]]
    config = {"method": method}
    out = pipe(
        PROMPTS, objects=objects, allow_absent_objects=True, capture_config=config, generator=generator(), **call
    )
    stock = parent_of(pipe)(PROMPTS, generator=generator(), **call).images
    np.testing.assert_array_equal(out.images, stock)  # no image token reads the concept tokens

    tembs, rotaries = [], []

    def record(module, args, kwargs):
        tembs.append(kwargs["temb"][-len(PROMPTS) :])
        if "image_rotary_emb" in kwargs:
            rotaries.append(kwargs["image_rotary_emb"])

    hooks = [b.register_forward_pre_hook(record, with_kwargs=True) for b in _blocks(pipe.transformer)]
    reference = JointReference(pipe.transformer, num_images=len(PROMPTS))
    try:
        parent_of(pipe)(PROMPTS, generator=generator(), **call)
    finally:
        reference.restore()
        for hook in hooks:
            hook.remove()
    if family == "sd3":
        states = pipe.encode_prompt(ABSENT, None, None, do_classifier_free_guidance=False,
                                    max_sequence_length=call["max_sequence_length"])[0]  # fmt: skip
        alone = [1, 77]  # each word alone: CLIP position 1 (after its BOS), T5 position 0
    else:
        states = pipe.encode_prompt(ABSENT, None, max_sequence_length=call["max_sequence_length"])[0]
        alone = [0]
    concept_states = torch.cat([states[a, alone] for a in range(len(ABSENT))])
    columns = [list(range(a * len(alone), (a + 1) * len(alone))) for a in range(len(ABSENT))]
    concept = normalize(_concept_maps(pipe, reference, tembs, rotaries, concept_states, columns, method))
    present = normalize(
        reference.maps(positions(family), GRID, LATENT, method="concept" if path == "output-space" else "joint")
    )
    # the prompt's words unchanged (to float32 sums in another order: the capture tests' tolerance)
    np.testing.assert_allclose(out.attention_maps[0][:2], present[0], atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(out.attention_maps[0][2], concept[0, 0], atol=1e-4)
    np.testing.assert_allclose(out.attention_maps[1][0], concept[1, 1], atol=1e-4)
    assert not np.allclose(out.attention_maps[0][2], out.attention_maps[1][0], atol=1e-2)  # two words, two maps


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_annotate_maps_words_the_caption_lacks(family, request):
    pipe = request.getfixturevalue(f"{family}_pipe")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    caption = PROMPTS[1]
    alone = pipe.annotate(image, caption, [OBJECTS[1]], generator=generator())
    with_word = pipe.annotate(image, caption, [[*OBJECTS[1], "cat"]], generator=generator(), allow_absent_objects=True)
    maps = with_word.attention_maps[0]
    assert maps.shape[0] == 3 and maps[2].max() == 1.0 and with_word.masks[0].shape == (3, 32, 32)
    np.testing.assert_allclose(maps[:2], alone.attention_maps[0], atol=1e-6)  # the caption's words unchanged
    with pytest.raises(ValueError, match="object 'cat' does not occur in prompt"):
        pipe.annotate(image, caption, [[*OBJECTS[1], "cat"]], generator=generator())
