"""A prompt that carries its object phrases, and prompt files."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from ..paths import local_path
from ..tokens import find_phrase


class ObjectPrompt(str):
    """A ``str`` (so every pipeline takes it as a prompt) with ``objects`` (phrases), optional ``labels``
    and ``origin`` (``"file:line"`` for a prompt read from a file, for error messages).

    The Free-ATM pipelines read ``objects`` when the call gives none.
    """

    objects: list[str]
    labels: list[int]
    origin: str

    def __new__(cls, text: str, objects: Sequence[str], labels: Sequence[int] = (), origin: str = ""):
        prompt = super().__new__(cls, text)
        prompt.objects, prompt.labels, prompt.origin = list(objects), list(labels), origin
        return prompt

    def __reduce__(self):
        return type(self), (str(self), self.objects, self.labels, self.origin)


def match_vocabulary(prompt: str, vocabulary: Sequence[str]) -> list[str]:
    """Phrases of ``vocabulary`` found in ``prompt``, longest first and without overlaps, in prompt order."""
    taken: list[tuple[int, int, str]] = []
    for phrase in sorted(set(vocabulary), key=len, reverse=True):
        for start, end in find_phrase(prompt, phrase):
            if all(end <= s or start >= e for s, e, _ in taken):
                taken.append((start, end, prompt[start:end]))
    return [text for _, _, text in sorted(taken)]


def _split_objects(value) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).replace("|", ";").split(";") if v.strip()]


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` without a byte-order mark (spreadsheets write one before a CSV's header);
    ``ValueError`` naming the file, line and byte of text that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x}); save the prompt file as UTF-8"
        ) from None


def read_prompt_file(path: str | Path, vocabulary: Sequence[str] | None = None) -> list[ObjectPrompt]:
    """Prompts from ``.txt`` (one a line), ``.jsonl`` (``prompt`` and optional ``objects``) or ``.csv``
    (``prompt`` column, optional ``objects`` column with ``;``-separated phrases).

    A prompt without objects gets the phrases of ``vocabulary`` it contains. Raises ``ValueError`` naming
    the file and line of a malformed entry, or of a prompt in which no object is found.
    """
    path = local_path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise ValueError(f"prompt file {path} must end in .txt, .jsonl or .csv, not {path.suffix!r}")
    if path.is_dir():
        raise ValueError(f"prompt file {path} is a folder, not a file")
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist")
    entries: list[tuple[int, str, list[str] | None]] = []
    with io.StringIO(_read_text(path), newline="") as handle:
        if suffix == ".txt":
            entries = [(n, line.strip(), None) for n, line in enumerate(handle, 1) if line.strip()]
        elif suffix == ".jsonl":
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{n}: not valid JSON ({error.msg})") from None
                if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                    raise ValueError(f"{path}:{n}: each line needs a string 'prompt', got {line.strip()[:80]!r}")
                objects = record.get("objects")
                entries.append((n, record["prompt"], None if objects is None else _split_objects(objects)))
        else:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "prompt" not in reader.fieldnames:
                raise ValueError(f"{path}: the CSV needs a 'prompt' column, found {reader.fieldnames}")
            for n, row in enumerate(reader, 2):
                objects = row.get("objects")
                entries.append((n, row["prompt"] or "", _split_objects(objects) if objects else None))
    prompts = []
    for n, text, objects in entries:
        if not text.strip():
            raise ValueError(f"{path}:{n}: empty prompt")
        if objects is None:
            if vocabulary is None:
                raise ValueError(f"{path}:{n}: no objects given and no vocabulary to find them")
            objects = match_vocabulary(text, vocabulary)
        if not objects:
            raise ValueError(f"{path}:{n}: no object found in prompt {text!r}; give an 'objects' column")
        for phrase in objects:
            if not find_phrase(text, phrase):
                raise ValueError(f"{path}:{n}: object {phrase!r} does not occur in prompt {text!r}")
        prompts.append(ObjectPrompt(text, objects, origin=f"{path}:{n}"))
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompt")
    return prompts
