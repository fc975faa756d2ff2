"""The picture MAE users look at first: each image, its masked input and the model's reconstruction."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from transformers import ViTMAEForPreTraining

from ...visualize import _font, image_grid

COLUMNS = ("image", "masked input", "reconstruction", "with visible patches")


def _pictures(pixels: torch.Tensor, cell: int) -> list[Image.Image]:
    array = (pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a).resize((cell, cell), Image.NEAREST) for a in array]


@torch.no_grad()
def reconstruction_grid(
    model: ViTMAEForPreTraining, pixel_values: torch.Tensor, noise: torch.Tensor, cell: int = 128, gap: int = 4
) -> Image.Image:
    """One row per image of ``pixel_values (N, 3, H, W)`` in [0, 1], masked by ``noise (N, L)`` (see
    :func:`free_atm.training.mae.masking.guided_noise`): the image, the masked input (masked patches
    gray), the reconstruction, and the reconstruction with the visible patches pasted back. Under
    ``norm_pix_loss`` the predicted patches are put back to each true patch's mean and variance, as in
    MAE's own visualisation."""
    model.eval()
    outputs = model(pixel_values=pixel_values, noise=noise)
    predicted = outputs.logits
    if model.config.norm_pix_loss:
        target = model.patchify(pixel_values)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        predicted = predicted * (var + 1.0e-6) ** 0.5 + mean
    size = tuple(pixel_values.shape[-2:])
    reconstruction = model.unpatchify(predicted, size)
    removed = model.unpatchify(outputs.mask.unsqueeze(-1).expand_as(predicted), size)
    masked = pixel_values * (1 - removed) + 0.5 * removed
    pasted = pixel_values * (1 - removed) + reconstruction * removed
    columns = [_pictures(x, cell) for x in (pixel_values, masked, reconstruction, pasted)]
    body = image_grid([p for row in zip(*columns) for p in row], columns=len(COLUMNS), gap=gap)
    font = _font(max(10, cell // 12))
    picture = Image.new("RGB", (body.width, body.height + font.size + 6), "white")
    picture.paste(body, (0, font.size + 6))
    draw = ImageDraw.Draw(picture)
    for k, name in enumerate(COLUMNS):
        draw.text((k * (cell + gap) + 2, 2), name, fill=(0, 0, 0), font=font)
    return picture
