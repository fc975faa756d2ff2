"""The MAE's encoder as a plain transformers ``ViTModel``: the backbone users fine-tune.

Pitfall: ``ViTMAEModel`` masks on every call, evaluation included, and even at ``mask_ratio=0`` it
returns the patches in a random order (it shuffles by fresh noise before keeping them all). A backbone
must see every patch in place, so the encoder's weights move into a ``ViTModel`` (the same module
names, position embeddings included), which never masks.
"""

from __future__ import annotations

import torch
from transformers import ViTConfig, ViTMAEConfig, ViTMAEForPreTraining, ViTMAEModel, ViTModel

MAE_ONLY = ("mask_ratio", "norm_pix_loss", "decoder_hidden_size", "decoder_num_hidden_layers")
MAE_ONLY += ("decoder_num_attention_heads", "decoder_intermediate_size")


def encoder_config(config: ViTMAEConfig) -> ViTConfig:
    """The ``ViTConfig`` of an MAE's encoder: its settings without the decoder's and the masking's."""
    settings = {k: v for k, v in config.to_dict().items() if k not in (*MAE_ONLY, "model_type", "architectures")}
    return ViTConfig(**settings)


def vit_encoder(model: ViTMAEForPreTraining | ViTMAEModel) -> ViTModel:
    """A ``ViTModel`` holding ``model``'s encoder weights, on the same device. Its pooler, which MAE
    does not train, is the identity before its tanh (``pooler_output = tanh(CLS)``), so that
    ``AutoModel.from_pretrained`` finds every weight and gives the same outputs on every load."""
    mae = model.vit if isinstance(model, ViTMAEForPreTraining) else model
    encoder = ViTModel(encoder_config(mae.config)).to(mae.device)
    missing, unexpected = encoder.load_state_dict(mae.state_dict(), strict=False)
    if unexpected or set(missing) != {"pooler.dense.weight", "pooler.dense.bias"}:
        raise RuntimeError(f"ViTMAE and ViT weights differ: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        encoder.pooler.dense.weight.copy_(torch.eye(encoder.config.hidden_size))
        encoder.pooler.dense.bias.zero_()
    return encoder.eval()
