"""A BERT WordPiece tokenizer with BLIP's special tokens, trained on the captions of a dataset.

BLIP's text model is BERT's with two extra tokens: ``[DEC]`` starts a caption for the decoder (its id is
the text config's ``bos_token_id``) and ``[ENC]`` marks image-grounded encoding. A user starting from a
Hub checkpoint (``Salesforce/blip-itm-base-coco``) takes that checkpoint's tokenizer instead; training
from scratch offline needs one learned from the captions and position prompts themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import BertTokenizerFast

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]")


def train_caption_tokenizer(texts: Iterable[str], vocab_size: int = 2000, max_length: int = 64) -> BertTokenizerFast:
    """A lowercasing WordPiece ``BertTokenizerFast`` learned from ``texts``: ``[PAD]`` is 0, every text is
    ``[CLS] ... [SEP]``, ``[DEC]`` is its ``bos_token`` and ``[ENC]`` an additional special token."""
    model = Tokenizer(WordPiece(unk_token="[UNK]"))
    model.normalizer = normalizers.BertNormalizer(lowercase=True)
    model.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    model.decoder = decoders.WordPiece()
    model.train_from_iterator(texts, WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS)))
    cls, sep = model.token_to_id("[CLS]"), model.token_to_id("[SEP]")
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
