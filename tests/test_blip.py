"""BLIP pretraining model: each loss against an independent computation, tied weights through a save and a
load, and exports that transformers' own BLIP classes run to the same outputs."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval

from free_atm.training.blip.losses import itc_distilled_loss, itc_loss
from free_atm.training.blip.model import BlipForPretraining, captioning_export, hard_negatives, retrieval_export


def tiny_config(**itc) -> BlipConfig:
    text = dict(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16, encoder_hidden_size=32, bos_token_id=1, pad_token_id=0, sep_token_id=2,
        label_smoothing=0.1,
    )  # fmt: skip
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32)
    vision["initializer_range"] = 0.02
    return BlipConfig(text_config=text, vision_config={**vision, "patch_size": 8}, image_text_hidden_size=16, **itc)


def batch(size: int = 4):
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (size, 7))
    ids[:, 0] = 3  # [CLS]
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    return torch.rand(size, 3, 32, 32), ids, mask


def test_itc_is_symmetric_infonce_written_out():
    torch.manual_seed(0)
    images, texts = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    temperature = torch.tensor(0.1)
    total = 0.0
    for i in range(5):
        row = torch.stack([images[i] @ texts[j] for j in range(5)]) / 0.1
        column = torch.stack([texts[i] @ images[j] for j in range(5)]) / 0.1
        total += (torch.logsumexp(row, 0) - row[i]) + (torch.logsumexp(column, 0) - column[i])
    torch.testing.assert_close(itc_loss(images, texts, temperature), total / 10)


def test_distilled_itc_is_blips_formula_written_out():
    """Online features against the momentum features of the batch then the queue; targets mix the truth
    with the momentum model's softmax by alpha."""
    torch.manual_seed(0)
    unit = lambda *shape: F.normalize(torch.randn(*shape), dim=-1)  # noqa: E731
    images, texts, images_m, texts_m = unit(3, 8), unit(3, 8), unit(3, 8), unit(3, 8)
    image_queue, text_queue = unit(4, 8), unit(4, 8)
    alpha, temperature = 0.4, 0.1
    total = 0.0
    for i in range(3):
        for online, momentum, others in (
            (images[i], images_m[i], [*texts_m, *text_queue]),
            (texts[i], texts_m[i], [*images_m, *image_queue]),
        ):
            logits = torch.stack([online @ o for o in others]) / temperature
            teacher = torch.stack([momentum @ o for o in others]) / temperature
            target = alpha * teacher.softmax(0)
            target[i] += 1 - alpha
            total += -(target * logits.log_softmax(0)).sum()
    loss = itc_distilled_loss(
        images, texts, images_m, texts_m, image_queue, text_queue, torch.tensor(temperature), alpha
    )
    torch.testing.assert_close(loss, total / 6)
    # no queue, no distillation, momentum = online: plain in-batch ITC
    empty = torch.empty(0, 8)
    plain = itc_distilled_loss(images, texts, images, texts, empty, empty, torch.tensor(temperature), 0.0)
    torch.testing.assert_close(plain, itc_loss(images, texts, torch.tensor(temperature)))


def test_momentum_encoder_follows_the_online_one_and_the_queues_take_each_batch(tmp_path):
    model = BlipForPretraining(tiny_config(itc_queue_size=6, itc_momentum=0.9, itc_alpha=0.4))
    torch.testing.assert_close(model.text_encoder_m.state_dict(), model.text_encoder.state_dict())
    assert not any(p.requires_grad for p in model.vision_model_m.parameters())
    with torch.no_grad():
        model.vision_proj.weight.add_(1.0)  # the online encoder has moved since the copy
    before = model.vision_proj_m.weight.clone()
    pixels, ids, mask = batch(4)
    model.train()
    model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(model.vision_proj_m.weight, 0.9 * before + 0.1 * model.vision_proj.weight)
    with torch.no_grad():  # the momentum features of this batch, by hand (the tiny model has no dropout)
        cls = model.vision_model_m(pixel_values=pixels).last_hidden_state[:, 0]
        expected = F.normalize(model.vision_proj_m(cls), dim=-1)
    torch.testing.assert_close(model.image_queue[:4], expected, rtol=1e-4, atol=1e-5)
    assert model.queue_ptr.item() == 4
    model(pixel_values=pixels.flip(-1), input_ids=ids, attention_mask=mask)
    assert model.queue_ptr.item() == 2  # rows 4, 5, 0, 1: the ring wrapped
    torch.testing.assert_close(model.text_queue.norm(dim=-1), torch.ones(6))
    model.eval()
    queue, weights = model.image_queue.clone(), model.vision_proj_m.weight.clone()
    model(pixel_values=pixels, input_ids=ids, attention_mask=mask)  # evaluation moves nothing
    assert torch.equal(model.image_queue, queue) and torch.equal(model.vision_proj_m.weight, weights)
    # momentum weights and queues survive a save and a load; the exports leave them out
    model.save_pretrained(tmp_path)
    loaded = BlipForPretraining.from_pretrained(tmp_path)
    assert loaded.queue_size == 6 and loaded.config.itc_momentum == 0.9
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, msg=name)
    assert not any("_m." in name or "queue" in name for name in retrieval_export(model).state_dict())


def test_hard_negatives_never_draw_the_positive_and_follow_the_similarity():
    similarity = torch.tensor([[5.0, 0.0, 1.0, 0.0]]).repeat(3, 1)
    similarity[1, 1], similarity[2, 2] = 5.0, 5.0  # each row's own column is its most similar
    draws = torch.stack([hard_negatives(similarity, torch.Generator().manual_seed(k)) for k in range(4000)])
    assert not (draws == torch.arange(3)).any()
    # row 0 draws from columns 1, 2, 3 with softmax weights 1 : e : 1
    share = (draws[:, 0] == 2).float().mean().item()
    expected = torch.e / (2 + torch.e)
    assert abs(share - expected) < 0.03, (share, expected)


def test_decoder_shares_all_but_self_attention_through_save_and_load(tmp_path):
    model = BlipForPretraining(tiny_config())
    encoder, decoder = model.text_encoder, model.text_decoder.bert
    assert decoder.embeddings is encoder.embeddings
    for encoder_layer, decoder_layer in zip(encoder.encoder.layer, decoder.encoder.layer):
        assert decoder_layer.crossattention is encoder_layer.crossattention
        assert (
            decoder_layer.intermediate is encoder_layer.intermediate and decoder_layer.output is encoder_layer.output
        )
        assert decoder_layer.attention is not encoder_layer.attention
    with torch.no_grad():
        encoder.encoder.layer[1].output.dense.weight.add_(1.0)  # visible in the decoder too
    model.save_pretrained(tmp_path)
    loaded = BlipForPretraining.from_pretrained(tmp_path)
    assert loaded.text_decoder.bert.embeddings is loaded.text_encoder.embeddings
    assert loaded.text_decoder.bert.encoder.layer[1].output is loaded.text_encoder.encoder.layer[1].output
    head = loaded.text_decoder.cls.predictions.decoder.weight
    assert head is loaded.text_encoder.embeddings.word_embeddings.weight
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, msg=name)


def test_exports_run_in_transformers_classes_to_the_same_itm_logits_and_lm_loss(tmp_path):
    model = BlipForPretraining(tiny_config()).eval()
    pixels, ids, mask = batch()
    retrieval_export(model).save_pretrained(tmp_path / "retrieval")
    captioning_export(model).save_pretrained(tmp_path / "captioning")
    retrieval = BlipForImageTextRetrieval.from_pretrained(tmp_path / "retrieval").eval()
    captioning = BlipForConditionalGeneration.from_pretrained(tmp_path / "captioning").eval()
    with torch.no_grad():
        # the ITM path of the pretraining model, by hand: image tokens into the text encoder's cross-attention
        images = model.vision_model(pixel_values=pixels).last_hidden_state
        fused = model.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=images)
        expected = model.itm_head(fused.last_hidden_state[:, 0])
        itm = retrieval(input_ids=ids, pixel_values=pixels, attention_mask=mask).itm_score
        itc = retrieval(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
        outputs = model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
        decoder_ids = ids.clone()
        decoder_ids[:, 0] = 1
        labels = decoder_ids.masked_fill(mask == 0, -100)
        labels[:, 0] = -100
        lm = captioning(pixel_values=pixels, input_ids=decoder_ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(itm, expected, rtol=1e-4, atol=1e-5)
    image_features = F.normalize(model.vision_proj(images[:, 0]), dim=-1)
    text_features = F.normalize(
        model.text_proj(model.text_encoder(input_ids=ids, attention_mask=mask)[0][:, 0]), dim=-1
    )
    torch.testing.assert_close(itc, image_features @ text_features.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.loss_lm, lm, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.loss_itc, itc_loss(image_features, text_features, model.temperature()))
    torch.testing.assert_close(outputs.loss, outputs.loss_itc + outputs.loss_itm + outputs.loss_lm)


def test_itm_loss_is_the_cross_entropy_of_true_pairs_and_hard_negatives():
    model = BlipForPretraining(tiny_config()).eval()
    pixels, ids, mask = batch()
    with torch.no_grad():
        torch.manual_seed(7)
        outputs = model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
        images = model.vision_model(pixel_values=pixels).last_hidden_state
        text = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        image_features = F.normalize(model.vision_proj(images[:, 0]), dim=-1)
        text_features = F.normalize(model.text_proj(text), dim=-1)
        torch.manual_seed(7)  # the same draws of negatives, in the same order
        negative_text = hard_negatives(image_features @ text_features.T)
        negative_image = hard_negatives(text_features @ image_features.T)
        pairs = [
            (ids, mask, images),
            (ids[negative_text], mask[negative_text], images),
            (ids, mask, images[negative_image]),
        ]
        logits = torch.cat(
            [
                model.itm_head(model.text_encoder(input_ids=i, attention_mask=m, encoder_hidden_states=v)[0][:, 0])
                for i, m, v in pairs
            ]
        )
    labels = torch.tensor([1] * 4 + [0] * 8)
    torch.testing.assert_close(outputs.loss_itm, F.cross_entropy(logits, labels), rtol=1e-4, atol=1e-5)


def test_caption_tokenizer_has_blips_special_tokens_and_reloads(tmp_path):
    from transformers import AutoTokenizer

    from free_atm.training.blip import position_prompt
    from free_atm.training.blip.tokenizer import train_caption_tokenizer

    captions = ["a red circle on a gray background", "a blue star and a green cross on a white background"]
    texts = [
        *captions,
        *(position_prompt(name, block) for name in ("red circle", "blue star") for block in range(1, 10)),
    ]
    tokenizer = train_caption_tokenizer(texts, vocab_size=200)
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token == "[DEC]" and "[ENC]" in tokenizer.all_special_tokens
    encoded = tokenizer("The blue star is in block 4.")
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "[UNK]" not in tokens and "4" in tokens
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("The blue star is in block 4.").input_ids == encoded.input_ids
    assert reloaded.convert_tokens_to_ids("[DEC]") == tokenizer.bos_token_id
    assert reloaded.decode(encoded.input_ids, skip_special_tokens=True) == "the blue star is in block 4."


def test_a_few_hundred_steps_lower_all_three_losses_with_position_prompts(tmp_path):
    from transformers import TrainingArguments

    from free_atm.training import MaskConsistentViews, ObjectMapCollator
    from free_atm.training.arguments import DataArguments
    from free_atm.training.blip import PositionPromptTrainer, blip_config, position_prompt, train_caption_tokenizer
    from free_atm.training.sources import COLUMNS

    data = DataArguments(dataset_name="shapes:400", image_size=32).training_data([*COLUMNS, "prompt"])
    names = {name for row in data["objects"] for name in row}
    prompts = [position_prompt(name, block) for name in names for block in range(1, 10)]
    tokenizer = train_caption_tokenizer([*data["prompt"], *prompts], vocab_size=120, max_length=48)
    torch.manual_seed(0)
    model = BlipForPretraining(blip_config(tokenizer, image_size=32, hidden_size=64, num_layers=1, num_heads=2))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=240,
        per_device_train_batch_size=16,
        learning_rate=3e-4,  # at 2e-3 the image and text features collapse and ITC stays at log(16)
        warmup_steps=20,
        logging_steps=40,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    trainer = PositionPromptTrainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=ObjectMapCollator(32),
        processing_class=tokenizer,
        views=MaskConsistentViews(32, scale=(0.5, 1.0), color_strength=0.0, grayscale=0.0, blur=0.0),
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    for name in ("loss_itc", "loss_lm"):
        assert logs[-1][name] < logs[0][name] - 0.3, [log[name] for log in logs]
    # ITM (one true pair to two hard negatives) falls to the entropy of the class prior (0.637), no further yet
    prior = -(math.log(1 / 3) + 2 * math.log(2 / 3)) / 3
    assert logs[-1]["loss_itm"] < logs[0]["loss_itm"] and logs[-1]["loss_itm"] < prior + 0.01
    # every caption carries a prompt per object left in the view: far longer than the bare captions
    bare = tokenizer(list(data["prompt"][:64]), padding=False).input_ids
    assert logs[-1]["caption_tokens"] > sum(map(len, bare)) / len(bare) + 5


def test_a_new_model_tells_images_apart():
    """transformers' BLIP vision config draws the CLS and position embeddings with std 1e-10; from scratch
    every image then gets the same CLS feature and ITC cannot learn."""
    from free_atm.training.blip import blip_config, train_caption_tokenizer

    tokenizer = train_caption_tokenizer(["a red circle", "a blue star"], vocab_size=60)
    model = BlipForPretraining(blip_config(tokenizer, image_size=32, hidden_size=32, num_layers=1, num_heads=2))
    with torch.no_grad():
        features = model.vision_proj(model.vision_model(pixel_values=torch.rand(4, 3, 32, 32)).last_hidden_state[:, 0])
    assert features.std(0).mean() > 1e-3


TINY_RUN = (
    *("--dataset_name", "shapes:24", "--image_size", "32", "--hidden_size", "32", "--num_layers", "1"),
    *("--num_heads", "2", "--vocab_size", "100", "--per_device_train_batch_size", "4", "--use_cpu"),
    *("--report_to", "none", "--logging_steps", "1"),
)


def test_training_script_on_two_processes_exports_transformers_blip_models_and_card(tmp_path, capsys):
    from PIL import Image
    from training_runs import ROOT, run_two_processes
    from transformers import BlipProcessor

    from free_atm.cli import main

    run_two_processes(
        ROOT / "trainers" / "train_blip.py",
        *TINY_RUN,
        "--max_steps",
        "3",
        "--save_strategy",
        "no",
        "--retrieval_scenes",
        "4",
        "--itc_queue_size",
        "16",
        "--output_dir",
        str(tmp_path),
    )
    processor = BlipProcessor.from_pretrained(tmp_path / "retrieval")
    retrieval = BlipForImageTextRetrieval.from_pretrained(tmp_path / "retrieval").eval()
    captioning = BlipForConditionalGeneration.from_pretrained(tmp_path / "captioning").eval()
    pretraining = BlipForPretraining.from_pretrained(tmp_path).eval()
    assert pretraining.queue_ptr.item() == 3 * 8 % 16  # each step queued the global batch (2 x 4)
    inputs = processor(images=Image.new("RGB", (32, 32), "red"), text="a red circle.", return_tensors="pt")
    assert inputs.pixel_values.shape == (1, 3, 32, 32)
    with torch.no_grad():
        itm = retrieval(**inputs).itm_score
        images = pretraining.vision_model(pixel_values=inputs.pixel_values).last_hidden_state
        fused = pretraining.text_encoder(input_ids=inputs.input_ids, encoder_hidden_states=images).last_hidden_state
        caption = captioning.generate(pixel_values=inputs.pixel_values, max_new_tokens=5)
    torch.testing.assert_close(itm, pretraining.itm_head(fused[:, 0]), rtol=1e-4, atol=1e-5)
    assert caption.shape[0] == 1
    card = (tmp_path / "README.md").read_text()
    assert "Prompts: all" in card and 'subfolder="retrieval"' in card and "loss_lm" in card
    # the held-out retrieval of the end of training, measured again by the command from the saved export
    recalls = dict(re.findall(r"\| (retrieval_\w+) \| ([\d.]+) \|", card))
    assert set(recalls) >= {"retrieval_txt_r1", "retrieval_img_r1", "retrieval_r_mean"}
    main(["retrieval", str(tmp_path), "--scenes", "4"])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert float(recalls["retrieval_r_mean"]) == pytest.approx(again["r_mean"], abs=0.01)


def test_starting_from_a_retrieval_checkpoint_keeps_its_weights_and_tokenizer(tmp_path):
    from transformers import BlipProcessor, TrainingArguments

    from free_atm.training.blip import blip_config, train_caption_tokenizer
    from free_atm.training.blip.recipe import BlipDataArguments, BlipModelArguments, blip_trainer

    # a folder laid out like Salesforce/blip-itm-base-coco: BlipForImageTextRetrieval and its processor
    tokenizer = train_caption_tokenizer(["a red circle", "a blue star", "the red circle is in block 4."], 80)
    torch.manual_seed(0)
    source = retrieval_export(BlipForPretraining(blip_config(tokenizer, 32, 8, 32, 1, 2)))
    source.save_pretrained(tmp_path / "itm")
    from transformers import BlipImageProcessor

    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(tmp_path / "itm")
    model_args = BlipModelArguments(model_name_or_path=str(tmp_path / "itm"))
    data_args = BlipDataArguments(dataset_name="shapes:8", image_size=32)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to=[], max_steps=1)
    trainer = blip_trainer(model_args, data_args, args)
    assert trainer.processing_class.get_vocab() == tokenizer.get_vocab()
    torch.testing.assert_close(trainer.model.itm_head.weight, source.itm_head.weight)
    torch.testing.assert_close(
        trainer.model.text_encoder.encoder.layer[0].crossattention.self.query.weight,
        source.text_encoder.encoder.layer[0].crossattention.self.query.weight,
    )
    with pytest.raises(ValueError, match="takes 32-pixel images, not --image_size 64"):
        blip_trainer(model_args, BlipDataArguments(dataset_name="shapes:8", image_size=64), args)
    # asked for BLIP's momentum encoder, which the checkpoint lacks: it starts as a copy of the online one
    momentum_args = BlipModelArguments(model_name_or_path=str(tmp_path / "itm"), itc_queue_size=8)
    model = blip_trainer(momentum_args, data_args, args).model
    assert model.queue_size == 8 and model.image_queue.shape == (8, 128)
    torch.testing.assert_close(model.vision_model_m.state_dict(), source.vision_model.state_dict())
    torch.testing.assert_close(model.text_proj_m.weight, source.text_proj.weight)


def test_killed_blip_training_resumes_to_the_uninterrupted_result(tmp_path):
    from training_runs import ROOT, assert_killed_run_resumes_to_the_uninterrupted_result

    arguments = [
        *TINY_RUN,
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--position_prompts",
        "one",
        "--itc_queue_size",
        "6",
    ]
    assert_killed_run_resumes_to_the_uninterrupted_result(ROOT / "trainers" / "train_blip.py", arguments, tmp_path)


def test_caption_tokenizer_is_the_same_in_every_process():
    """The ``tokenizers`` WordPiece trainer numbered tied pieces differently in each process."""
    import json
    import subprocess
    import sys

    from free_atm.training.blip import train_caption_tokenizer

    colours, kinds = ("red", "blue", "green"), ("star", "cross")
    texts = [f"a {c} {k} on a {b} background" for c in colours for k in kinds for b in ("gray", "white")]
    program = (
        "import json, sys; from free_atm.training.blip import train_caption_tokenizer;"
        "print(json.dumps(train_caption_tokenizer(json.loads(sys.argv[1]), vocab_size=60).get_vocab()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", program, json.dumps(texts)], capture_output=True, text=True, check=True
    )
    assert json.loads(other.stdout.splitlines()[-1]) == train_caption_tokenizer(texts, vocab_size=60).get_vocab()
    with pytest.raises(ValueError, match="a vocabulary of 10 tokens cannot hold the 7 special tokens and the"):
        from free_atm.training.blip import train_caption_tokenizer

        train_caption_tokenizer(["a red star"], vocab_size=10)


def test_retrieval_scores_are_itm_plus_itc_of_the_top_k_as_the_export_computes_them():
    from free_atm.metrics import retrieval_recalls
    from free_atm.training.blip.retrieval import retrieval_scores

    model = BlipForPretraining(tiny_config()).eval()
    pixels, ids, mask = batch(5)
    image_to_text, text_to_image = retrieval_scores(model, pixels, ids, mask, k=5)  # every pair re-ranked
    export = retrieval_export(model)
    with torch.no_grad():
        expected = torch.stack(
            [
                export(
                    pixel_values=pixels[i : i + 1].expand(5, -1, -1, -1), input_ids=ids, attention_mask=mask
                ).itm_score[:, 1]
                + export(
                    pixel_values=pixels[i : i + 1], input_ids=ids, attention_mask=mask, use_itm_head=False
                ).itm_score[0]
                for i in range(5)
            ]
        )
    torch.testing.assert_close(image_to_text, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text_to_image, expected, rtol=1e-4, atol=1e-5)
    # with k = 2, each image keeps its two most ITC-similar texts, the rest -inf
    top2, top2_back = retrieval_scores(model, pixels, ids, mask, k=2)
    assert (top2.isfinite().sum(1) == 2).all()
    recalls = retrieval_recalls(top2.numpy(), list(range(5)), text_to_image_scores=top2_back.numpy())
    assert 0 <= recalls["r_mean"] <= 100


def test_push_to_hub_uploads_model_exports_processor_and_card(tmp_path, monkeypatch):
    import sys

    from hub_fake import fake_hub
    from training_runs import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "trainers"))
    from train_blip import main

    hub_args = ["--push_to_hub", "--hub_model_id", "me/blip-prompts", "--save_strategy", "no"]
    monkeypatch.setattr(
        sys, "argv", ["train_blip.py", *TINY_RUN, "--max_steps", "2", "--output_dir", str(tmp_path), *hub_args]
    )
    with fake_hub(monkeypatch) as hub:
        main()
    assert {"name": "blip-prompts", "organization": "me"}.items() <= hub.created[0].items()
    expected = {"README.md", "model.safetensors", "tokenizer.json", "retrieval/model.safetensors"}
    assert expected | {"captioning/config.json", "retrieval/processor_config.json"} <= set(hub.uploaded)
