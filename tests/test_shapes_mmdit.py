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
