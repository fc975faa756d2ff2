"""Fine-tune a pretrained backbone for semantic segmentation of rendered shapes-world scenes by shape kind
(background + 5 kinds), with transformers' UperNet head, and score it by mean IoU on held-out scenes.

    python trainers/finetune_segmentation.py --backbone outputs/simclr --output_dir outputs/seg \
        --max_steps 500 --learning_rate 1e-3

``--backbone``: a ResNet or ViT folder, a pretraining output holding one (``backbone/`` of
train_contrastive.py, ``encoder/`` of train_mae.py), or a Hub id. A ResNet's four stages feed UperNet;
a ViT's patch grid goes through ViTDet's simple feature pyramid first. The output holds the fine-tuned
model and ``eval_results.json`` (``mean_iou`` and each class's IoU).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from free_atm.finetuning import finetune_segmentation, shapes_segmentation_dataset
from free_atm.training.arguments import FreeATMTrainingArguments, ScriptArgumentParser
from free_atm.training.run import training_run
from free_atm.usage import run_reporting_bad_input


@dataclass
class SegmentationArguments:
    backbone: str = field(metadata={"help": "ResNet/ViT folder, pretraining output folder, or Hub id"})
    train_scenes: int = field(default=2000, metadata={"help": "rendered training scenes"})
    test_scenes: int = field(default=500, metadata={"help": "held-out scenes for mean IoU"})
    image_size: int = 64
    head_channels: int = field(default=64, metadata={"help": "width of the pyramid levels and the UperNet head"})
    data_seed_offset: int = field(default=0, metadata={"help": "shifts the scene seeds (train 10, test 11)"})

    def __post_init__(self) -> None:
        for name in ("train_scenes", "test_scenes", "image_size", "head_channels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")


def main() -> None:
    args, training_args = ScriptArgumentParser(
        (SegmentationArguments, FreeATMTrainingArguments)
    ).parse_args_into_dataclasses()
    train = shapes_segmentation_dataset(args.train_scenes, 10 + args.data_seed_offset, args.image_size)
    test = shapes_segmentation_dataset(args.test_scenes, 11 + args.data_seed_offset, args.image_size)
    with training_run(training_args, asdict(args)) as resume:
        result = finetune_segmentation(
            args.backbone, train, test, training_args, args.head_channels, resume_from_checkpoint=resume
        )
        out = Path(training_args.output_dir)
        result.model.save_pretrained(out)
        metrics = {"mean_iou": result.mean_iou, "class_iou": result.class_iou, "backbone": args.backbone}
        (out / "eval_results.json").write_text(json.dumps(metrics, indent=2))
    print(f"mean_iou={result.mean_iou:.4f}")


if __name__ == "__main__":
    run_reporting_bad_input(main, "finetune_segmentation.py")
