"""The ``free-atm`` command (also ``python -m free_atm``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

DEMO_PROMPTS = (
    ("a red circle and a blue square", ["circle", "square"]),
    ("a dog with a teddy bear in the park", ["dog", "teddy bear"]),
    ("a green triangle on a gray background", ["triangle"]),
    ("a cat and a bird on a table", ["cat", "bird", "table"]),
)


def load_pipeline(model: str):
    """A Free-ATM pipeline: ``tiny-random`` (random weights, built from configs) or a local dir / Hub id."""
    from .diffusion import FreeATMDiffusionPipeline

    if model == "tiny-random":
        from .diffusion.random_components import tiny_sd_components

        return FreeATMDiffusionPipeline(**tiny_sd_components())
    return FreeATMDiffusionPipeline.from_pretrained(model)


def generate(args: argparse.Namespace) -> None:
    """Generate images with their masks into ``--out``: PNG files, ``metadata.jsonl`` and ``overlay.png``."""
    from .visualize import image_grid, overlay_masks

    if args.num_images <= 0:
        raise SystemExit(f"--num-images must be positive, got {args.num_images}")
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    overlays, records = [], []
    for index in range(args.num_images):
        prompt, objects = DEMO_PROMPTS[index % len(DEMO_PROMPTS)]
        seed = args.seed + index
        result = pipe(
            prompt,
            objects=objects,
            num_inference_steps=args.steps,
            height=args.height,
            width=args.width,
            generator=torch.Generator().manual_seed(seed),
        )
        image, masks, boxes = result.images[0], result.masks[0], result.boxes[0]
        name = f"{index:05d}"
        image.save(out / "images" / f"{name}.png")
        for m, mask in enumerate(masks):
            Image.fromarray(mask.astype("uint8") * 255).save(out / "masks" / f"{name}_{m}.png")
        records.append(
            {"file": f"images/{name}.png", "prompt": prompt, "objects": objects, "seed": seed, "boxes": boxes.tolist()}
        )
        overlays.append(overlay_masks(image, masks, boxes, objects))
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    image_grid(overlays).save(out / "overlay.png")
    print(f"wrote {len(records)} images with masks to {out} (overlay: {out / 'overlay.png'})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="free-atm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate images with attention masks")
    gen.add_argument("--model", default="tiny-random", help="'tiny-random', a pipeline folder or a Hub id")
    gen.add_argument("--num-images", type=int, default=4)
    gen.add_argument("--out", required=True)
    gen.add_argument("--steps", type=int, default=10)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--height", type=int, default=64)
    gen.add_argument("--width", type=int, default=64)
    gen.set_defaults(run=generate)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)
