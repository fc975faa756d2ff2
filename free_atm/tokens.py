"""Object phrases to token positions, through the tokenizer's character offsets.

Word index is not token index: "hippopotamus" is several CLIP tokens and "teddy bear" is two words. The
positions are found by locating the phrase in the prompt text and keeping every token whose character
span overlaps it, as the tokenizer that feeds the text encoder encodes the prompt (special tokens,
truncation and all), so that a position is a column of the cross-attention keys.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

__all__ = ["TextSource", "find_phrase", "object_token_indices", "object_token_weights"]


class TextSource(NamedTuple):
    """One tokenizer whose tokens the denoiser attends to, the prompts it encodes, where its tokens start in
    the attended text sequence (SD3 puts T5's after CLIP's 77) and the length it truncates to (``None``: the
    tokenizer's ``model_max_length``)."""

    tokenizer: PreTrainedTokenizerBase
    prompts: Sequence[str]
    offset: int = 0
    max_length: int | None = None


def find_phrase(prompt: str, phrase: str) -> list[tuple[int, int]]:
    """Character spans of every whole-word occurrence of ``phrase`` in ``prompt``.

    Matching ignores case, the amount of whitespace between words and the Unicode form (a phrase typed
    composed, "café" as NFC, matches the prompt's decomposed "café", NFD, and the other way round), and
    accepts a plural ending ("dog" matches "dogs", "bus" matches "buses"). Spans are in ``prompt`` as given.
    """
    words = phrase.split()
    if not words:
        raise ValueError(f"object phrase {phrase!r} is empty")
    spans = set()
    for form in {unicodedata.normalize(form, phrase) for form in ("NFC", "NFD")}:
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in form.split()) + r"(?:e?s)?(?!\w)"
        spans.update(m.span() for m in re.finditer(pattern, prompt, flags=re.IGNORECASE))
    return sorted(spans)


def object_token_indices(
    tokenizer: PreTrainedTokenizerBase, prompt: str, phrase: str, max_length: int | None = None
) -> list[int]:
    """Positions, in the encoded and truncated prompt, of the tokens that spell ``phrase``.

    Every whole occurrence counts. Raises ``ValueError`` naming the object and the prompt when the phrase
    does not occur, or occurs only past ``max_length`` (default: the tokenizer's maximum length) or across
    it: an object cut by the truncation would be mapped by its first words alone.
    """
    max_length = max_length or tokenizer.model_max_length
    spans = find_phrase(prompt, phrase)
    if not spans:
        raise ValueError(f"object {phrase!r} does not occur in prompt {prompt!r}")
    if not tokenizer.is_fast:
        raise TypeError(
            f"{type(tokenizer).__name__} gives no character offsets; object tokens need a fast (tokenizers) tokenizer"
        )
    encoding = tokenizer(prompt, truncation=True, max_length=max_length, return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    tokens = [
        (i, start, end)
        for i, ((start, end), token_id) in enumerate(zip(encoding["offset_mapping"], encoding["input_ids"]))
        if end > start and token_id not in special
    ]
    kept_until = max((end for _, _, end in tokens), default=0)  # the prompt's characters left after truncation
    whole = [(s, e) for s, e in spans if e <= kept_until]
    indices = [i for i, start, end in tokens if any(start < e and end > s for s, e in whole)]
    if not indices:
        where = "across" if any(s < kept_until for s, _ in spans) else "past"
        raise ValueError(
            f"object {phrase!r} of prompt {prompt!r} lies {where} the tokenizer's limit of {max_length} tokens "
            "and was truncated; shorten the prompt or name the object earlier"
        )
    return indices


def object_token_weights(
    sources: Sequence[TextSource | tuple[PreTrainedTokenizerBase, Sequence[str]]],
    objects: Sequence[Sequence[str]],
    sequence_length: int,
    skip_absent: bool = False,
) -> torch.Tensor:
    """Weights ``(num_prompts, sequence_length, max_objects)`` whose column ``m`` averages object m's tokens.

    ``sources`` are :class:`TextSource` s (or ``(tokenizer, prompts)`` pairs), one per tokenizer whose
    tokens the denoiser attends to (SDXL has two, and ``prompt_2`` may differ from ``prompt``; SD3 adds
    T5's after CLIP's); a phrase's positions are the union over the sources in which it occurs. Padding
    columns (prompts with fewer objects) are zero; an object its prompt lacks is a ``ValueError`` naming
    it, or with ``skip_absent`` a zero column too.
    """
    sources = [TextSource(*source) for source in sources]
    num_prompts = len(objects)
    weights = torch.zeros(num_prompts, sequence_length, max((len(o) for o in objects), default=0))
    for i, phrases in enumerate(objects):
        for m, phrase in enumerate(phrases):
            positions: set[int] = set()
            errors = []
            for source in sources:
                try:
                    found = object_token_indices(source.tokenizer, source.prompts[i], phrase, source.max_length)
                    positions.update(source.offset + position for position in found)
                except ValueError as error:
                    errors.append(error)
            if not positions:
                if skip_absent:
                    continue
                raise errors[0]
            if max(positions) >= sequence_length:
                raise ValueError(
                    f"object {phrase!r} sits at token {max(positions)}, past the text encoder's "
                    f"{sequence_length} positions"
                )
            weights[i, sorted(positions), m] = 1.0 / len(positions)
    return weights
