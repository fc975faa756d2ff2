"""CLIP-format BPE tokenizers built locally: from a word list, or from CLIP's ``bpe_simple_vocab_16e6`` file."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping  # insertion order (printable bytes first) fixes the token ids


def _byte_alphabet() -> list[str]:
    alphabet = list(bytes_to_unicode().values())
    return alphabet + [symbol + "</w>" for symbol in alphabet]


def _build(merges: list[tuple[str, str]], model_max_length: int) -> CLIPTokenizer:
    vocab_list = _byte_alphabet() + ["".join(pair) for pair in merges] + list(SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _segment(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the adjacent pair of lowest rank until none applies."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def clip_tokenizer_from_words(words: Iterable[str], model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP-format tokenizer in which each of ``words`` (lower case) is a single token.

    Merges are added word by word: the word is encoded with the merges so far (earlier words' merges win,
    as in any BPE), and the pieces that come out are joined left to right by new merges. Every text still
    tokenizes (unknown words fall back to smaller pieces, down to single bytes), so it serves small models
    trained from scratch and tests that need a real BPE tokenizer offline.
    """
    encoder = bytes_to_unicode()
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        symbols = [encoder[b] for b in word.encode("utf-8")]
        if not symbols:
            continue
        symbols[-1] += "</w>"
        while len(pieces := _segment(symbols, ranks)) > 1:
            ranks.setdefault((pieces[0], pieces[1]), len(ranks))
    return _build(list(ranks), model_max_length)


def clip_tokenizer_from_bpe_file(path: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """The original CLIP tokenizer (49,408 tokens) from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    return _build(merges, model_max_length)
