"""Image-text retrieval by BLIP's protocol: ITC similarity for all pairs, then ITM re-ranking of the top k."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .model import BlipForPretraining


@torch.no_grad()
def retrieval_scores(
    model: BlipForPretraining,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    k: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``(num_images, num_texts)`` image to text and text to image: every image's k texts of highest
    ITC similarity (and every text's k images) re-scored as ITM's match logit plus the similarity, the
    others -inf. Inputs hold every image and every text of the evaluation set."""
    model.eval()
    images = model.vision_model(pixel_values=pixel_values).last_hidden_state
    texts = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
    image_features = F.normalize(model.vision_proj(images[:, 0]), dim=-1)
    text_features = F.normalize(model.text_proj(texts), dim=-1)
    similarity = image_features @ text_features.T
    k_texts, k_images = min(k, similarity.shape[1]), min(k, similarity.shape[0])

    def matching(image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        fused = model.text_encoder(
            input_ids=input_ids[text_index],
            attention_mask=attention_mask[text_index],
            encoder_hidden_states=images[image_index],
        ).last_hidden_state[:, 0]
        return model.itm_head(fused)[:, 1] + similarity[image_index, text_index]

    image_to_text = torch.full_like(similarity, float("-inf"))
    for i in range(len(similarity)):
        top = similarity[i].topk(k_texts).indices
        image_to_text[i, top] = matching(torch.full_like(top, i), top)
    text_to_image = torch.full_like(similarity, float("-inf"))
    for t in range(similarity.shape[1]):
        top = similarity[:, t].topk(k_images).indices
        text_to_image[top, t] = matching(top, torch.full_like(top, t))
    return image_to_text, text_to_image
