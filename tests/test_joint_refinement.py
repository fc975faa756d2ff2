"""Self-attention refinement on SD3 and Flux: the image-to-image part of each counted block's joint softmax,
read from the same log-sum-exp as the maps, against the full softmax written by hand (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import generator, normalize
from test_joint_capture import GRID, LATENT, OBJECTS, PROMPTS, call_for, positions, reference_run

from free_atm.attention.joint_processor import image_attention, image_log_norm


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize(("power", "path"), [(1, "kernel"), (2, "kernel"), (2, "second pass")])
def test_refined_maps_equal_the_full_softmax_propagated_by_hand(family, power, path, request, monkeypatch):
    import free_atm.attention.joint_processor as joint

    pipe = request.getfixturevalue(f"{family}_pipe")
    if path == "second pass":  # no kernel log-sum-exp: the image-key scores computed again
        for processor in (joint.SD3AttentionCaptureProcessor, joint.FluxAttentionCaptureProcessor):
            monkeypatch.setattr(processor, "KERNEL_PROCESSORS", ())
    call = call_for(family)
    config = {"refinement": "self_attention", "refinement_power": power}
    out = pipe(PROMPTS, objects=OBJECTS, capture_config=config, generator=generator(), **call)
    plain = pipe(PROMPTS, objects=OBJECTS, generator=generator(), **call)
    np.testing.assert_array_equal(out.images, plain.images)  # refinement leaves the images alone
    _, reference = reference_run(pipe, call)
    maps = reference.maps(positions(family), GRID, LATENT).double()  # (n, M, 16, 16), before normalising
    attention = reference.image_attention()  # (n, 64, 64) over the 8 x 8 token grid
    flat = F.interpolate(maps, size=GRID, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    for _ in range(power):
        flat = attention @ flat
    refined = F.interpolate(flat.transpose(1, 2).reshape(*maps.shape[:2], *GRID), size=LATENT, mode="bilinear")
    expected = normalize(refined.float())
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(torch.from_numpy(out.attention_maps[i]), expected[i], atol=2e-5, rtol=1e-4)
    assert not np.allclose(out.attention_maps[0], plain.attention_maps[0], atol=1e-3)


def test_image_attention_from_the_log_sum_exp_is_the_softmaxs_image_block():
    generator_ = torch.Generator().manual_seed(0)
    query, image_keys, text_keys = (torch.randn(2, 3, n, 8, generator=generator_) for n in (10, 10, 5))
    scale = 8**-0.5
    full = torch.cat([query @ image_keys.transpose(-1, -2), query @ text_keys.transpose(-1, -2)], -1) * scale
    full = full.double().softmax(-1)
    lse = torch.logaddexp(
        image_log_norm(query, image_keys, scale), (query @ text_keys.transpose(-1, -2) * scale).logsumexp(-1)
    )
    got = image_attention(query, image_keys, lse, scale)
    torch.testing.assert_close(got.double(), full[..., :10].mean(1), atol=1e-6, rtol=1e-5)
    assert (got.sum(-1) < 1).all()  # the rest of each row went to the text


def test_refinement_settings_a_transformer_cannot_take_say_why(sd3_pipe):
    call = call_for("sd3")
    for config, named in (
        ({"refinement": "self_attention", "method": "concept"}, "method='attention'"),
        ({"refinement": "self_attention", "refinement_scales": (1,)}, "refinement_scales"),
    ):
        with pytest.raises(ValueError, match=named):
            sd3_pipe(PROMPTS, objects=OBJECTS, capture_config=config, **call)
