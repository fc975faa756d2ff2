"""``BlipForPretraining``: BLIP's three pretraining losses on transformers' own BLIP parts.

No transformers class trains image-text contrast (ITC), image-text matching (ITM) and language modelling
(LM) together. This model holds the parts under the attribute names of ``BlipForImageTextRetrieval``
(``vision_model``, ``text_encoder``, ``vision_proj``, ``text_proj``, ``itm_head``) and of
``BlipForConditionalGeneration`` (``text_decoder``), so that both load its weights. As in the original
BLIP, the decoder shares every weight with the encoder but its causal self-attention (embeddings,
cross-attention and feed-forward of every layer); the sharing is declared parameter by parameter in
``_tied_weights_keys``, which ``save_pretrained`` writes once and ``from_pretrained`` ties again.

ITC optionally keeps BLIP's momentum encoder (vision and text encoders and projections, following the
online ones by ``config.itc_momentum``), queues of ``config.itc_queue_size`` momentum features as extra
negatives and momentum distillation (targets mixed with the momentum model's own softmax by
``itc_alpha``); ``itc_queue_size`` 0 (the default) is plain in-batch ITC.

A difference from the original, for the exports' sake: ITM reads the caption's own first token (as
``BlipForImageTextRetrieval`` does) where BLIP swaps in an ``[ENC]`` token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval
from transformers.models.blip.modeling_blip import BlipPreTrainedModel, BlipVisionModel
from transformers.models.blip.modeling_blip_text import BlipTextLMHeadModel, BlipTextModel
from transformers.utils import ModelOutput

from ..distributed import gather, gather_with_grad, pad_to_global_length, world_size_and_rank
from ..momentum import enqueue, frozen_copies, momentum_update
from .losses import itc_distilled_loss, itc_loss

#: the decoder's modules that are the encoder's, per layer (all but the causal self-attention)
SHARED_PER_LAYER = ("crossattention", "intermediate", "output")


@dataclass
class BlipPretrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_lm: torch.Tensor | None = None
    itm_accuracy: torch.Tensor | None = None


def _resolve(tied: dict[str, str]) -> dict[str, str]:
    """Each tied weight pointing at the one that is stored, not at another tied one."""
    resolved = {}
    for target, source in tied.items():
        while source in tied:
            source = tied[source]
        resolved[target] = source
    return resolved


def hard_negatives(similarity: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row of ``similarity (B, G)`` (this process's B items against the G of the global batch,
    row i's own item at column ``offset + i``), one negative column drawn with probability
    ``softmax(similarity)`` over the other columns (BLIP's hard negatives)."""
    if similarity.shape[1] < 2:
        raise ValueError("image-text matching needs at least 2 pairs in the global batch to draw negatives")
    rows = torch.arange(len(similarity), device=similarity.device)
    weights = F.softmax(similarity.float(), dim=1)
    weights[rows, rows + world_size_and_rank()[1] * len(similarity)] = 0.0
    return torch.multinomial(weights, 1, generator=generator)[:, 0]


class BlipForPretraining(BlipPreTrainedModel):
    """ITC + ITM + LM on images and captions; ``config.text_config.label_smoothing`` (0.1 in BLIP) smooths
    the LM targets. ``forward(pixel_values, input_ids, attention_mask)`` returns the summed loss and each
    part."""

    config_class = BlipConfig
    main_input_name = "pixel_values"

    def __init__(self, config: BlipConfig):
        super().__init__(config)
        self.vision_model = BlipVisionModel(config.vision_config)
        self.text_encoder = BlipTextModel(config.text_config, add_pooling_layer=False)
        self.text_decoder = BlipTextLMHeadModel(config.text_config)
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.image_text_hidden_size)
        self.text_proj = nn.Linear(config.text_config.hidden_size, config.image_text_hidden_size)
        self.itm_head = nn.Linear(config.text_config.hidden_size, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        shared = [("bert.embeddings", "embeddings")] + [
            (f"bert.encoder.layer.{i}.{name}", f"encoder.layer.{i}.{name}")
            for i in range(config.text_config.num_hidden_layers)
            for name in SHARED_PER_LAYER
        ]
        tied = {f"text_decoder.{k}": f"text_decoder.{v}" for k, v in BlipTextLMHeadModel._tied_weights_keys.items()}
        for decoder_name, encoder_name in shared:
            module = self.text_encoder.get_submodule(encoder_name)
            parent, _, leaf = decoder_name.rpartition(".")
            setattr(self.text_decoder.get_submodule(parent), leaf, module)
            for name, _ in module.named_parameters():
                tied[f"text_decoder.{decoder_name}.{name}"] = f"text_encoder.{encoder_name}.{name}"
        self._tied_weights_keys = _resolve(tied)
        if self.queue_size:
            self.vision_model_m = BlipVisionModel(config.vision_config)
            self.text_encoder_m = BlipTextModel(config.text_config, add_pooling_layer=False)
            self.vision_proj_m = nn.Linear(config.vision_config.hidden_size, config.image_text_hidden_size)
            self.text_proj_m = nn.Linear(config.text_config.hidden_size, config.image_text_hidden_size)
            for name in ("image_queue", "text_queue"):
                queue = F.normalize(torch.randn(self.queue_size, config.image_text_hidden_size), dim=-1)
                self.register_buffer(name, queue)
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.post_init()
        if self.queue_size:
            self.reset_momentum()

    @property
    def queue_size(self) -> int:
        """ITC features kept from earlier batches (``config.itc_queue_size``; 0: no momentum encoder)."""
        return getattr(self.config, "itc_queue_size", 0)

    def _momentum_pairs(self) -> tuple[list[nn.Module], list[nn.Module]]:
        online = [self.vision_model, self.text_encoder, self.vision_proj, self.text_proj]
        return online, [self.vision_model_m, self.text_encoder_m, self.vision_proj_m, self.text_proj_m]

    def reset_momentum(self) -> None:
        """Make the momentum encoder a copy of the online one (a new model, or a checkpoint without it)."""
        frozen_copies(*self._momentum_pairs())

    def temperature(self) -> torch.Tensor:
        """BLIP's learnable temperature, clamped to [0.001, 0.5]."""
        return self.temp.clamp(0.001, 0.5)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        itc_alpha: float | None = None,
        **kwargs,
    ) -> BlipPretrainingOutput:
        """``itc_alpha``: the momentum distillation weight of this step (BLIP ramps it up over the first
        epoch; default ``config.itc_alpha``); in training mode the momentum encoder moves and the queues
        take this global batch's momentum features."""
        input_ids = pad_to_global_length(input_ids, self.config.text_config.pad_token_id)
        attention_mask = pad_to_global_length(attention_mask, 0)
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        image_features = F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)
        text_embeds = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        text_features = F.normalize(self.text_proj(text_embeds[:, 0]), dim=-1)
        temperature = self.temperature()
        if self.queue_size:
            momentum = [gather(f) for f in self.momentum_features(pixel_values, input_ids, attention_mask)]
            queues = [self.image_queue, self.text_queue]
            alpha = self.config.itc_alpha if itc_alpha is None else itc_alpha
            loss_itc = itc_distilled_loss(
                image_features, text_features, *momentum, *[q.clone() for q in queues], temperature, alpha
            )
            if self.training:
                enqueue(queues, self.queue_ptr, momentum)  # the global batch's, gathered once
        else:
            loss_itc = itc_loss(image_features, text_features, temperature)

        # ITM: the true pairs, and for each image a hard negative caption and for each caption a hard
        # negative image, drawn from the global batch by ITC similarity
        all_images, all_ids, all_masks = gather_with_grad(image_embeds), gather(input_ids), gather(attention_mask)
        with torch.no_grad():
            all_text_features, all_image_features = gather(text_features.float()), gather(image_features.float())
            negative_text = hard_negatives(image_features.float() @ all_text_features.T)
            negative_image = hard_negatives(text_features.float() @ all_image_features.T)
        batch = len(pixel_values)
        matched = self.text_encoder(
            input_ids=torch.cat([input_ids, all_ids[negative_text], input_ids]),
            attention_mask=torch.cat([attention_mask, all_masks[negative_text], attention_mask]),
            encoder_hidden_states=torch.cat([image_embeds, image_embeds, all_images[negative_image]]),
            encoder_attention_mask=image_atts.repeat(3, 1),
        ).last_hidden_state[:, 0]
        logits = self.itm_head(matched).float()
        labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(logits.device)
        loss_itm = F.cross_entropy(logits, labels)

        # LM: the caption from the decoder's start token, next-token prediction, padding ignored
        decoder_ids = input_ids.clone()
        decoder_ids[:, 0] = self.config.text_config.bos_token_id
        targets = decoder_ids.masked_fill(attention_mask == 0, -100)
        targets[:, 0] = -100
        loss_lm = self.text_decoder(
            input_ids=decoder_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_atts,
            labels=targets,
            reduction="mean",
        ).loss
        return BlipPretrainingOutput(
            loss=loss_itc + loss_itm + loss_lm,
            loss_itc=loss_itc.detach(),
            loss_itm=loss_itm.detach(),
            loss_lm=loss_lm.detach(),
            itm_accuracy=(logits.argmax(-1) == labels).float().mean().detach(),
        )

    @torch.no_grad()
    def momentum_features(self, pixel_values, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """ITC features of the momentum encoder, images and texts, L2-normalised; in training mode the
        momentum encoder first takes its step towards the online one."""
        if self.training:
            momentum_update(*self._momentum_pairs(), self.config.itc_momentum)
        images = self.vision_model_m(pixel_values=pixel_values).last_hidden_state[:, 0]
        texts = self.text_encoder_m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return F.normalize(self.vision_proj_m(images), dim=-1), F.normalize(self.text_proj_m(texts), dim=-1)


def blip_config(
    tokenizer,
    image_size: int = 64,
    patch_size: int = 8,
    hidden_size: int = 192,
    num_layers: int = 4,
    num_heads: int = 3,
    image_text_hidden_size: int = 128,
    itc_queue_size: int = 0,
    itc_momentum: float = 0.995,
    itc_alpha: float = 0.4,
) -> BlipConfig:
    """A small BLIP for training from scratch: vision and text transformers of ``num_layers`` layers of
    width ``hidden_size``, the text vocabulary and special tokens of ``tokenizer`` (BLIP's ``[DEC]`` as
    ``bos_token``), LM label smoothing 0.1, every weight drawn with std 0.02; ITC with a momentum encoder
    and queues of ``itc_queue_size`` features when it is positive (BLIP: 57600, momentum 0.995, alpha 0.4)."""
    common = dict(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads)
    text = dict(
        **common,
        intermediate_size=4 * hidden_size,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        encoder_hidden_size=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        label_smoothing=0.1,
    )
    # transformers' BlipVisionConfig initialises the class and position embeddings with std 1e-10 (its
    # checkpoints are always loaded): from scratch every image's CLS token would be the same and ITC stuck
    vision = dict(**common, intermediate_size=4 * hidden_size, image_size=image_size, patch_size=patch_size)
    vision["initializer_range"] = 0.02
    itc = dict(itc_queue_size=itc_queue_size, itc_momentum=itc_momentum, itc_alpha=itc_alpha)
    return BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=image_text_hidden_size, **itc)


def retrieval_export(model: BlipForPretraining) -> BlipForImageTextRetrieval:
    """The ITC and ITM parts as transformers' ``BlipForImageTextRetrieval`` (the same weights, copied)."""
    export = BlipForImageTextRetrieval(model.config).to(model.device)
    export.load_state_dict(model.state_dict(), strict=False)
    return export.eval()


def captioning_export(model: BlipForPretraining) -> BlipForConditionalGeneration:
    """The vision encoder and the LM decoder as transformers' ``BlipForConditionalGeneration``."""
    export = BlipForConditionalGeneration(model.config).to(model.device)
    export.load_state_dict(model.state_dict(), strict=False)
    return export.eval()
