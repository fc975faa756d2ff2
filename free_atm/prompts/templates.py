"""Prompts after the paper's templates, drawn from the ImageNet label space, deterministic by seed.

"[Class] (with [other class]) is/are [somewhere]" and "[Class] with [other class] is/are [doing
something] [somewhere]", with the place and the action chosen by the class's coarse group.
"""

from __future__ import annotations

import numpy as np

from .labels import ImageNetClass, imagenet_classes
from .prompt import ObjectPrompt

PLACES = {
    "animal": ("in a meadow", "in the forest", "on a riverbank", "in a field", "at the zoo", "on the grass"),
    "vehicle": ("on a city street", "on a country road", "in a parking lot", "near the harbour", "in the desert"),
    "food": ("on a wooden table", "on a white plate", "in a kitchen", "at a picnic", "on a market stall"),
    "object": ("on a table", "in a living room", "on a shelf", "in a workshop", "on the floor"),
    "plant": ("in a garden", "in a forest", "by the roadside", "in a pot", "on a hillside"),
    "person": ("in a stadium", "in a park", "on a beach", "in the city"),
    "scene": ("at sunset", "under a blue sky", "in the morning light", "in winter"),
}
ACTIONS = {
    "animal": ("running", "resting", "playing", "looking at the camera", "walking"),
    "vehicle": ("driving", "parked", "moving slowly", "waiting"),
    "person": ("smiling", "walking", "standing", "posing"),
}
#: groups whose classes can be the "other class" of a prompt about a class of the key group
COMPANIONS = {
    "animal": ("animal", "object", "plant", "food"),
    "vehicle": ("vehicle", "object", "person", "animal"),
    "food": ("food", "object", "plant"),
    "object": ("object", "food", "plant", "animal"),
    "plant": ("plant", "animal", "object"),
    "person": ("animal", "object", "vehicle", "food"),
    "scene": ("animal", "vehicle", "person", "plant"),
}
_IRREGULAR = {
    "mouse": "mice",
    "goose": "geese",
    "fish": "fish",
    "sheep": "sheep",
    "ox": "oxen",
    "man": "men",
    "person": "people",
    "child": "children",
    "foot": "feet",
    "tooth": "teeth",
    "knife": "knives",
}
_NUMBERS = ("two", "three", "several")


def article(phrase: str) -> str:
    """``"a"`` or ``"an"`` by the sound of the first word (spelling rules with the common exceptions)."""
    word = phrase.lower()
    if word.startswith(("hour", "honest", "honor", "heir")):
        return "an"
    if word.startswith(("uni", "use", "usu", "eu", "one", "ewe", "uk")):
        return "a"
    return "an" if word[:1] in "aeiou" else "a"


def plural(phrase: str) -> str:
    """The plural of a noun phrase (its last word inflected)."""
    head, _, last = phrase.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR:
        inflected = _IRREGULAR[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        inflected = last + "es"
    elif lower.endswith("y") and lower[-2:-1] not in tuple("aeiou"):
        inflected = last[:-1] + "ies"
    else:
        inflected = last + "s"
    return f"{head} {inflected}" if head else inflected


def _mention(cls: ImageNetClass, count: int) -> tuple[str, str, str]:
    """(noun phrase with determiner, the object phrase as written, verb) for ``count`` instances."""
    name = cls.name.lower() if cls.name[:1].isupper() and cls.name[1:].islower() else cls.name
    if count == 1:
        return f"{article(name)} {name}", name, "is"
    written = plural(name)
    return f"{_NUMBERS[min(count, 4) - 2]} {written}", written, "are"


def template_prompt(seed: int, index: int, classes: tuple[ImageNetClass, ...] | None = None) -> ObjectPrompt:
    """Prompt ``index`` of the stream seeded with ``seed``; it carries its object phrases and class indices."""
    classes = classes or imagenet_classes()
    rng = np.random.default_rng([seed, index])
    main = classes[int(rng.integers(len(classes)))]
    count = 1 if rng.random() < 0.8 or main.group == "scene" else int(rng.integers(2, 4))
    subject, phrase, verb = _mention(main, count)
    objects, labels = [phrase], [main.index]
    if main.group != "scene" and rng.random() < 0.5:
        companions = [c for c in classes if c.group in COMPANIONS[main.group] and c.index != main.index]
        other = companions[int(rng.integers(len(companions)))]
        other_text, other_phrase, _ = _mention(other, 1)
        if other_phrase.lower() not in phrase.lower() and phrase.lower() not in other_phrase.lower():
            subject, objects, labels = (
                f"{subject} with {other_text}",
                [phrase, other_phrase],
                [main.index, other.index],
            )
    place = PLACES[main.group][int(rng.integers(len(PLACES[main.group])))]
    if main.group == "scene":
        text = f"{subject} {place}"
    elif main.group in ACTIONS and len(objects) == 2 and rng.random() < 0.6:
        action = ACTIONS[main.group][int(rng.integers(len(ACTIONS[main.group])))]
        text = f"{subject} {verb} {action} {place}"
    else:
        text = f"{subject} {verb} {place}"
    return ObjectPrompt(text[0].upper() + text[1:], objects=objects, labels=labels)
