"""Decoding training rows one at a time, so that a broken row is named instead of crashing a worker.

``datasets`` decodes ``Image`` columns when a row is read, inside the DataLoader's workers: a truncated
PNG then ends training with a PIL traceback that says nothing of which row. Training sources keep their
image columns undecoded (:func:`undecoded`) and carry each row's number; the collator decodes with
:func:`decode_row`, which raises :class:`BadRowError` naming the row, and ``--skip_bad_rows`` drops such
rows in one pass before training (:func:`drop_bad_rows`).
"""

from __future__ import annotations

import io
import logging

from datasets import Dataset, Image
from PIL import Image as PILImage

logger = logging.getLogger(__name__)

ROW = "row"  # the column holding each row's number in its source


class BadRowError(ValueError):
    """A training row whose image or maps do not decode, or whose maps do not match its objects."""


def undecoded(dataset: Dataset, name: str) -> Dataset:
    """``dataset`` with ``image`` and ``attention_maps`` left as bytes and a ``row`` column
    ``"{name}:{index}"``."""
    dataset = dataset.cast_column("image", Image(decode=False))
    dataset = dataset.cast_column("attention_maps", [Image(decode=False)])
    return dataset.add_column(ROW, [f"{name}:{i}" for i in range(len(dataset))])


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
    decode, or of maps that differ in number from the objects or in size from each other."""
    name = row.get(ROW, "?")
    decoded = dict(row, image=_open(row["image"], "image", name))
    decoded["attention_maps"] = [_open(m, f"attention map {k}", name) for k, m in enumerate(row["attention_maps"])]
    if "objects" in row and len(row["objects"]) != len(decoded["attention_maps"]):
        raise BadRowError(
            f"row {name}: {len(decoded['attention_maps'])} attention maps for {len(row['objects'])} objects"
        )
    if len({m.size for m in decoded["attention_maps"]}) > 1:
        raise BadRowError(
            f"row {name}: attention maps of different sizes {[m.size for m in decoded['attention_maps']]}"
        )
    return decoded


def _is_good(row: dict) -> bool:
    try:
        decode_row(row)
    except BadRowError as error:
        logger.warning("skipping %s", error)
        return False
    return True


def drop_bad_rows(dataset: Dataset) -> tuple[Dataset, int]:
    """``dataset`` without the rows :func:`decode_row` rejects, and how many there were."""
    kept = dataset.filter(_is_good, desc="checking rows")
    return kept, len(dataset) - len(kept)
