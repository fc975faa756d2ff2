"""Decoding training rows one at a time, so that a broken row is named instead of crashing a worker.

``datasets`` decodes ``Image`` columns when a row is read, inside the DataLoader's workers: a truncated
PNG then ends training with a PIL traceback that says nothing of which row. Training sources keep their
image columns undecoded (:func:`undecoded`) and carry each row's name (its shard file and index in it,
for a generated folder); the collator decodes with :func:`decode_rows`, which raises :class:`BadRowError`
naming the row, or with ``--skip_bad_rows`` skips it where it is met (no pass over the data first).
"""

from __future__ import annotations

import io
import logging

from datasets import Dataset, Image
from PIL import Image as PILImage

from ..data.schema import check_row

logger = logging.getLogger(__name__)

ROW = "row"  # the column holding each row's number in its source


class BadRowError(ValueError):
    """A training row whose image or maps do not decode, or whose maps do not match its objects."""


def undecoded(dataset: Dataset, name: str, row_names: list[str] | None = None) -> Dataset:
    """``dataset`` with ``image`` and ``attention_maps`` left as bytes and a ``row`` column naming each
    row: ``row_names``, or ``"{name}:{index}"``."""
    dataset = dataset.cast_column("image", Image(decode=False))
    dataset = dataset.cast_column("attention_maps", [Image(decode=False)])
    return dataset.add_column(ROW, row_names or [f"{name}:{i}" for i in range(len(dataset))])


def _open(value, what: str, row: str) -> PILImage.Image:
    if isinstance(value, PILImage.Image):
        return value
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        picture = PILImage.open(source)
        picture.load()
        return picture
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise BadRowError(f"row {row}: the {what} does not decode ({type(error).__name__}: {error})") from None


def decode_row(row: dict) -> dict:
    """``row`` with its image and maps as PIL images; ``BadRowError`` names the row of one that does not
    decode, or whose columns disagree (:func:`free_atm.data.schema.check_row`)."""
    name = row.get(ROW, "?")
    decoded = dict(row, image=_open(row["image"], "image", name))
    decoded["attention_maps"] = [_open(m, f"attention map {k}", name) for k, m in enumerate(row["attention_maps"])]
    try:
        check_row(decoded, name)
    except ValueError as error:
        raise BadRowError(str(error)) from None
    return decoded


def decode_rows(rows: list[dict], skip_bad_rows: bool = False) -> list[dict]:
    """:func:`decode_row` of each row. With ``skip_bad_rows`` a row that does not decode is logged and its
    place taken by a good row of the same batch, so that batches keep their size (processes gather them);
    a batch without one good row is a :class:`BadRowError` even then."""
    decoded, bad = [], []
    for row in rows:
        try:
            decoded.append(decode_row(row))
        except BadRowError as error:
            if not skip_bad_rows:
                raise
            logger.warning("skipping %s (--skip_bad_rows)", error)
            bad.append(str(error))
    if not decoded:
        raise BadRowError(f"every row of a batch is damaged, for example {bad[0]}")
    return decoded + [decoded[k % len(decoded)] for k in range(len(bad))]
