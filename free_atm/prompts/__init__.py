"""Prompts with their object phrases: the ImageNet label space, templates, prompt files, rewriting."""

from .labels import GROUPS, ImageNetClass, imagenet_classes, imagenet_vocabulary
from .prompt import ObjectPrompt, match_vocabulary, read_prompt_file
from .rewrite import local_rewriter, rewrite_prompts
from .templates import article, plural, template_prompt

__all__ = [
    "GROUPS",
    "ImageNetClass",
    "ObjectPrompt",
    "article",
    "imagenet_classes",
    "local_rewriter",
    "match_vocabulary",
    "imagenet_vocabulary",
    "plural",
    "read_prompt_file",
    "rewrite_prompts",
    "template_prompt",
]
