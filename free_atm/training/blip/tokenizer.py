"""A BERT WordPiece tokenizer with BLIP's special tokens, built from the captions of a dataset.

BLIP's text model is BERT's with two extra tokens: ``[DEC]`` starts a caption for the decoder (its id is
the text config's ``bos_token_id``) and ``[ENC]`` marks image-grounded encoding. A user starting from a
Hub checkpoint (``Salesforce/blip-itm-base-coco``) takes that checkpoint's tokenizer instead; training
from scratch offline needs one made from the captions and position prompts themselves.

Pitfall: the ``tokenizers`` WordPiece trainer breaks ties between equally frequent pieces differently
in every process, so two processes (or a run and its resumption) would give the same weights different
ids. The vocabulary here is built deterministically instead: the special tokens, every character of the
captions alone and as a ``##`` continuation (so that no word is unknown), then whole words by falling
count, ties in alphabetical order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]")


def train_caption_tokenizer(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 64) -> BertTokenizerFast:
    """A lowercasing WordPiece ``BertTokenizerFast`` of at most ``vocab_size`` tokens for ``texts``, the same
    in every process: ``[PAD]`` is 0, every text is ``[CLS] ... [SEP]``, ``[DEC]`` is its ``bos_token``
    and ``[ENC]`` an additional special token."""
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for text in texts for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({character for word in counts for character in word})
    alphabet = [*characters, *(f"##{character}" for character in characters)]
    room = vocab_size - len(SPECIAL_TOKENS) - len(alphabet)
    if room < 0:
        raise ValueError(
            f"a vocabulary of {vocab_size} tokens cannot hold the {len(SPECIAL_TOKENS)} special tokens and the "
            f"{len(alphabet)} characters of the captions"
        )
    words = [word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1]
    vocabulary = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet, *words[:room]])}
    model = Tokenizer(WordPiece(vocabulary, unk_token="[UNK]"))
    model.normalizer, model.pre_tokenizer, model.decoder = normalizer, splitter, decoders.WordPiece()
    cls, sep = vocabulary["[CLS]"], vocabulary["[SEP]"]
    model.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return BertTokenizerFast(
        tokenizer_object=model,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        bos_token="[DEC]",
        additional_special_tokens=["[ENC]"],
        model_max_length=max_length,
    )
