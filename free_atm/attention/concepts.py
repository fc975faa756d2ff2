"""Words the prompt lacks, on SD3 and Flux: concept tokens that read the image and are read by nothing.

After ConceptAttention. Each absent word is encoded on its own by the pipeline's text encoders, and its
token columns, embedded by the transformer's ``context_embedder``, enter the first block beside the prompt's
text as extra tokens of the conditional pass. Every block carries them on as it carries the prompt's text:
its own context modulation (``norm1_context`` with the step's ``temb``), context projections and norms,
context output projection and feed-forward (Flux's single-stream blocks: the shared modulation,
projections, MLP and ``proj_out``). They attend to the image tokens and to each other; no image or text
token attends to them, so the image is bitwise the one drawn without them.

How a concept token's map is normalised: the image query ``i`` scores the token's key,
``s_ic = q_i . k_c / sqrt(d)``, and the score becomes the probability the query would give the token were it
one more key of the layer, all else equal: ``exp(s_ic) / (exp(lse_i) + exp(s_ic))``, where ``lse_i`` is the
query's log-sum-exp over the layer's own keys (the normaliser of the prompt's maps; over the text keys alone
under ``normalization="text"``; under ``method="concept"`` the same with the attention outputs in place of
queries and keys). Each token is scored alone, so two absent words never compete, and a word's map does
not depend on which other words are asked for.

Memory: the stream holds ``K`` tokens per image (``K`` the absent words' token count), nothing per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ConceptStream:
    """The concept tokens of the current transformer call.

    Args:
        states: ``(K, D)`` the absent words' token states as the text encoders give them (each word's
            token columns of its own encoding, one word after another).
    """

    states: torch.Tensor
    tokens: torch.Tensor | None = None  # (n, K, inner): the residual stream, advanced block by block
    temb: torch.Tensor | None = None  # (n, inner): the conditioning of the block being run
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # Flux: the block's rotary embedding (cos, sin)
    running: bool = False

    def start(self, context_embedder: torch.nn.Module, num_images: int, active: bool) -> None:
        """Called before each transformer call: the stream restarts from the embedded words when the call counts."""
        self.running = active
        if active:
            weight = next(context_embedder.parameters())
            embedded = context_embedder(self.states.to(weight.device, weight.dtype))
            self.tokens = embedded.unsqueeze(0).expand(num_images, -1, -1)


def concept_probs(scores: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
    """``(n, H, N, K)`` probabilities of concept-token ``scores`` ``(n, H, N, K)`` as one more key each, beside
    keys whose log-sum-exp per query is ``log_norm`` ``(n, H, N)``: ``sigmoid(score - log_norm)``."""
    return torch.sigmoid(scores.float() - log_norm.float().unsqueeze(-1))


def concept_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor
) -> torch.Tensor:
    """The concept tokens' attention output ``(n, K, H * d)``: their queries ``(n, H, K, d)`` over the image's keys
    and values ``(n, H, N, d)`` and their own."""
    keys = torch.cat([image_keys.to(key.dtype), key], dim=2)
    values = torch.cat([image_values.to(value.dtype), value], dim=2)
    return F.scaled_dot_product_attention(query, keys, values).transpose(1, 2).flatten(2)
