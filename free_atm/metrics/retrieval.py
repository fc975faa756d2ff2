"""Recall at k of image-text retrieval in both directions, from a score matrix (BLIP's protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def retrieval_recalls(
    scores: np.ndarray,
    text_image: Sequence[int],
    ks: Sequence[int] = (1, 5, 10),
    text_to_image_scores: np.ndarray | None = None,
) -> dict[str, float]:
    """``scores (num_images, num_texts)``, higher is better; ``text_image[t]`` is the image caption ``t``
    describes (an image may have several captions). Returns, in percent, ``txt_r{k}`` (image to text: an
    image is found when any of its captions is among its k best texts), ``img_r{k}`` (text to image: its
    image among the k best), their means ``txt_r_mean``, ``img_r_mean`` and ``r_mean``. Text to image
    ranks by ``text_to_image_scores`` (same shape) where the two directions were scored apart (BLIP
    re-ranks each direction's own top k)."""
    scores, text_image = np.asarray(scores, np.float64), np.asarray(text_image)
    backward = scores if text_to_image_scores is None else np.asarray(text_to_image_scores, np.float64)
    images, texts = scores.shape
    if text_image.shape != (texts,):
        raise ValueError(f"text_image needs one image per text ({texts}), got shape {text_image.shape}")
    if texts and (text_image.min() < 0 or text_image.max() >= images):
        raise ValueError(f"text_image holds an image index outside 0..{images - 1}")
    # rank of each pair among its row (image to text) or column (text to image), 0 = best; ties count against
    text_rank = (scores[:, None, :] > scores[:, :, None]).sum(-1)  # (images, texts)
    image_rank = (backward.T[:, None, :] > backward.T[:, :, None]).sum(-1)  # (texts, images)
    best_caption = np.full(images, np.inf)
    np.minimum.at(best_caption, text_image, text_rank[text_image, np.arange(texts)])
    described = np.isfinite(best_caption)
    own_image = image_rank[np.arange(texts), text_image]
    result = {}
    for k in ks:
        result[f"txt_r{k}"] = 100.0 * float((best_caption[described] < k).mean())
        result[f"img_r{k}"] = 100.0 * float((own_image < k).mean())
    result["txt_r_mean"] = float(np.mean([result[f"txt_r{k}"] for k in ks]))
    result["img_r_mean"] = float(np.mean([result[f"img_r{k}"] for k in ks]))
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    return result
