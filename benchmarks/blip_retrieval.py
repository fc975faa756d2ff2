"""BLIP pretrained with position prompts against without, at equal steps: image-text retrieval on held-out
rendered scenes whose captions say where each object is (``free-atm retrieval``'s set: each scene in
mirrored layouts, so that only the position prompts tell a scene's images apart).

Both arms start from the same weights and tokenizer (learned from the captions and every prompt) and see
the same batches and views; they differ only in ``--position_prompts`` (all, the paper, against none).
Recalls are BLIP's protocol: ITC top k re-ranked by ITM + ITC.

    python benchmarks/blip_retrieval.py                         # CPU-sized: a small BLIP at 64 px
    python benchmarks/blip_retrieval.py --dataset outputs/demo  # a generated free-atm dataset

Prints JSON, then ``prompts_tr1=<a> prompts_ir1=<b> plain_tr1=<c> plain_ir1=<d>`` (R@1 in percent: tr
image to text, ir text to image).
"""

from __future__ import annotations

import argparse
import json
import time

from transformers import BlipProcessor, TrainingArguments

from free_atm.training.blip.evaluation import evaluate_retrieval, positional_retrieval_set
from free_atm.training.blip.recipe import BlipDataArguments, BlipModelArguments, blip_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes:4000", help="dataset folder, Hub id or shapes:N")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--retrieval-scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/blip_retrieval")
    options = parser.parse_args()
    scenes = positional_retrieval_set(options.retrieval_scenes, size=options.image_size)
    model_args = BlipModelArguments(
        hidden_size=options.hidden_size, num_layers=options.num_layers, num_heads=options.num_heads
    )
    results = {}
    for arm, mode in (("prompts", "all"), ("plain", "none")):
        data_args = BlipDataArguments(
            dataset_name=options.dataset, image_size=options.image_size, position_prompts=mode
        )
        training_args = TrainingArguments(
            output_dir=f"{options.output_dir}/{arm}",
            max_steps=options.steps,
            per_device_train_batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            weight_decay=0.05,
            warmup_steps=options.steps // 10,
            logging_steps=max(1, options.steps // 10),
            report_to=[],
            save_strategy="no",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            seed=options.seed,
            disable_tqdm=True,
        )
        trainer = blip_trainer(model_args, data_args, training_args)
        processor = BlipProcessor(trainer.image_processor, trainer.processing_class)
        if not results:
            results["init"] = evaluate_retrieval(trainer.model, processor, scenes)  # both arms start here
        start = time.perf_counter()
        trainer.train()
        logs = [log for log in trainer.state.log_history if "loss" in log]
        results[arm] = {
            **evaluate_retrieval(trainer.model, processor, scenes),
            **{f"last_{name}": logs[-1][name] for name in ("loss_itc", "loss_itm", "loss_lm", "caption_tokens")},
            "train_seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps({"config": vars(options), "images": len(scenes.images), "results": results}, indent=2))
    print(
        " ".join(
            f"{arm}_{short}1={results[arm][f'{name}_r1']:.1f}"
            for arm in ("prompts", "plain")
            for short, name in (("tr", "txt"), ("ir", "img"))
        )
    )


if __name__ == "__main__":
    main()
