"""Optional rewriting of template prompts by a local text-generation model, keeping the object words."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..tokens import find_phrase
from .prompt import ObjectPrompt

INSTRUCTION = (
    "Rewrite the image description as one vivid, realistic sentence. Keep the words {words}.\n"
    "Description: {prompt}\nRewritten:"
)


def local_rewriter(model_path: str, max_new_tokens: int = 40, seed: int = 0) -> Callable[[str], str]:
    """A function prompt -> rewritten text, backed by a local ``transformers`` text-generation model."""
    from transformers import pipeline, set_seed

    set_seed(seed)
    generate = pipeline("text-generation", model=model_path)

    def rewrite(instruction: str) -> str:
        text = generate(instruction, max_new_tokens=max_new_tokens, do_sample=True, return_full_text=False)
        return text[0]["generated_text"].strip().split("\n")[0]

    return rewrite


def rewrite_prompts(prompts: Sequence[ObjectPrompt], rewriter: Callable[[str], str]) -> list[ObjectPrompt]:
    """Each prompt rewritten by ``rewriter`` when the rewrite keeps every object phrase, else kept as is."""
    rewritten = []
    for prompt in prompts:
        text = rewriter(INSTRUCTION.format(words=", ".join(prompt.objects), prompt=prompt))
        keeps = bool(text) and all(find_phrase(text, phrase) for phrase in prompt.objects)
        rewritten.append(ObjectPrompt(text, prompt.objects, prompt.labels) if keeps else prompt)
    return rewritten
