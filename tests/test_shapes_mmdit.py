"""The shapes-world SD3 (an MM-DiT around the shipped model's VAE and word codes) that the
ConceptAttention benchmark trains."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from transformers import CLIPTextModel

from free_atm.models.shapes.architecture import default_model_path
from free_atm.models.shapes.mmdit import shapes_sd3_pipeline, shapes_sd3_text_encoder

CAPTION = "a red star and a blue circle on a gray background"


def test_token_states_are_the_shipped_word_codes():
    """SD3 reads the penultimate CLIP state: with one layer that is word + position embedding, unmixed."""
    words = CLIPTextModel.from_pretrained(default_model_path(), subfolder="text_encoder")
    encoder = shapes_sd3_text_encoder(words, seed=1)
    ids = torch.tensor([[0, 5, 9, 3, 1]])
    states = encoder(ids, output_hidden_states=True).hidden_states
    assert len(states) == 2
    expected = words.get_input_embeddings()(ids) + words.embeddings.position_embedding(torch.arange(5))
    torch.testing.assert_close(states[-2], expected)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_pipeline_draws_64_px_and_captures_from_clip_positions():
    pipe = shapes_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    assert pipe.default_image_size == (64, 64)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler) and pipe.vae.config.shift_factor == 0.0
    states, _, pooled, _ = pipe.encode_prompt(
        [CAPTION], None, None, do_classifier_free_guidance=False, max_sequence_length=0
    )
    assert states.shape == (1, 24, pipe.transformer.config.joint_attention_dim) and pooled.shape == (1, 128)
    out = pipe(
        CAPTION, objects=["red star", "blue circle"], num_inference_steps=2, max_sequence_length=0, output_type="np"
    )
    assert out.images.shape == (1, 64, 64, 3)
    assert out.attention_maps[0].shape[0] == 2 and out.masks[0].shape == (2, 64, 64)


def test_the_joint_region_shares_equal_the_explicit_softmax_and_leave_the_output_alone():
    """The fused shares against each block's full softmax in float64 (``JointReference``), head-averaged,
    renormalised over the image keys; the outputs are the stock processor's; the loss by hand."""
    from joint_reference import JointReference

    from free_atm.models.shapes.grounding import region_loss_from_shares, region_weights
    from free_atm.models.shapes.joint_regions import JointRegionAttnProcessor
    from free_atm.models.shapes.mmdit import shapes_sd3_transformer

    transformer = shapes_sd3_transformer(width=64, num_layers=2).eval()
    inputs = dict(
        hidden_states=torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(0)),
        encoder_hidden_states=torch.randn(2, 24, 128, generator=torch.Generator().manual_seed(1)),
        pooled_projections=torch.randn(2, 128, generator=torch.Generator().manual_seed(2)),
        timestep=torch.tensor([200.0, 800.0]),
    )
    masks = torch.zeros(2, 2, 64, 64)
    masks[0, 0, :32, :24], masks[0, 1, 40:, 40:], masks[1, 0, 8:56, 8:56] = 1, 1, 1
    valid = torch.tensor([[True, True], [True, False]])
    with torch.no_grad():
        stock = transformer(**inputs).sample
        reference = JointReference(transformer, num_images=2)
        transformer(**inputs)
        reference.restore()
        store: list = []
        processor = JointRegionAttnProcessor(store)
        transformer.set_attn_processor(processor)
        processor.set_regions(masks, valid)
        fused = transformer(**inputs).sample
    torch.testing.assert_close(fused, stock, rtol=1e-5, atol=1e-5)
    assert len(store) == len(reference.records) == 2
    weights = region_weights(masks, valid, 8).double()  # (B, R, 64): two objects and the background
    expected = []
    for (share, w), record in zip(store, reference.records):
        image = record["image_probs"].double().mean(1)  # (B, N, N), head-averaged image-to-image part
        hand = (image @ weights.transpose(1, 2)) / image.sum(-1, keepdim=True)  # (B, N, R)
        torch.testing.assert_close(share.double(), hand.transpose(1, 2), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(w.double(), weights)
        expected.append((weights * (1 - hand.transpose(1, 2)).square()).sum() / weights.sum())
    loss = region_loss_from_shares(store)
    torch.testing.assert_close(loss.double(), torch.stack(expected).mean(), rtol=1e-4, atol=1e-6)
