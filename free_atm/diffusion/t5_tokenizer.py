"""T5-format (SentencePiece Unigram) tokenizers built locally from a word list, for SD3's and Flux's T5.

Each word is one piece ``"▁word"``; any other text falls back to a bare ``"▁"`` and single letters, so
every lower-case ASCII text tokenizes. Like T5's own tokenizer it appends ``</s>`` and has no BOS.
"""

from __future__ import annotations

from collections.abc import Iterable
from string import ascii_lowercase, digits

from transformers import T5TokenizerFast


def t5_tokenizer_from_words(words: Iterable[str], model_max_length: int = 512) -> T5TokenizerFast:
    """A T5 tokenizer in which each of ``words`` (lower case) is a single token."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -1.0) for word in dict.fromkeys(w.lower() for w in words)]
    pieces += [(symbol, -10.0) for symbol in ascii_lowercase + digits + ".,"]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=model_max_length)
