"""Maps for words the prompt does not contain (open-vocabulary attribution, after OVAM's attribution prompts).

Each absent word is encoded on its own by the pipeline's text encoder(s). At every counted cross-attention
layer and step, the image queries of the conditional pass are scored against the keys of that encoding,
made by the layer's own key projection, in the same call: nothing is stored and the image is untouched.

How such a map is normalised, and what it means: the softmax runs over the word's own encoding (its start,
end and padding tokens included), as if the prompt had been the word alone, and the word's token columns
are kept. A pixel's value is the share of attention it would give the word in that prompt; it says where
the model sees the word's meaning in the image being drawn, whatever the prompt asked for. The values
are not comparable with the prompt's own words (those compete with each other in one softmax); each map is
min-max normalised for its mask like every other map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Attribution:
    """The absent words of a call.

    Args:
        states: ``(A, L, D)``, each word's text states on their own, as the denoiser's cross-attention reads text.
        columns: per word, its token positions in its own encoding.
    """

    states: torch.Tensor
    columns: list[torch.Tensor]


def attribution_weights(
    weights: torch.Tensor, objects: Sequence[Sequence[str]], words: Sequence[str], word_weights: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Extend token weights ``(B, L, M)`` (zero columns for absent objects) with the attribution keys.

    ``word_weights`` ``(A, L, 1)`` holds each absent word's tokens in its own encoding. Returns weights
    ``(B, L + K, M)``: rows ``L..L+K`` are the words' token columns one word after another, and the column of
    each absent object averages its word's tokens there; and the token positions of each word.
    """
    columns = [w[:, 0].nonzero().flatten() for w in word_weights]
    starts = torch.tensor([0, *(len(c) for c in columns)]).cumsum(0).tolist()
    extra = weights.new_zeros(weights.shape[0], starts[-1], weights.shape[2])
    for b, phrases in enumerate(objects):
        for m, phrase in enumerate(phrases):
            if phrase in words and not weights[b, :, m].any():
                a = list(words).index(phrase)
                extra[b, starts[a] : starts[a + 1], m] = word_weights[a, columns[a], 0]
    return torch.cat([weights, extra], 1), columns
