"""The web demo: the session behind it, the served app through gradio_client, and the page in a real
headless Chromium (Debian's, which .ci/run installs)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image

from free_atm.confidence import mask_confidence
from free_atm.data.schema import sample_features
from free_atm.demo import DemoSession, parse_objects
from free_atm.demo.heatmap import RAMP, colourize

PROMPT, OBJECTS = "a red circle and a blue square", "circle, square"
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return DemoSession("tiny-random", "cpu", str(tmp_path_factory.mktemp("demo")))


def test_objects_box_and_vocabulary():
    assert parse_objects(" dog, teddy bear\ncat ,, ") == ["dog", "teddy bear", "cat"]
    shapes = DemoSession("shapes")
    assert shapes.suggest_objects("a red circle above a blue square") == "red circle, blue square"
    assert DemoSession("tiny-random").suggest_objects("a golden retriever and a tabby cat") == (
        "golden retriever, tabby cat"
    )


def test_heat_map_ramp_against_its_anchors():
    values = np.array([[0.0, 1.0, 0.125, 2.0]])  # 0.125 is halfway between the first two of five anchors
    colours = colourize(values)
    np.testing.assert_array_equal(colours[0, 0], RAMP[0])
    np.testing.assert_array_equal(colours[0, 1], RAMP[-1])
    np.testing.assert_array_equal(colours[0, 2], np.rint((RAMP[0] + RAMP[1]) / 2))
    np.testing.assert_array_equal(colours[0, 3], RAMP[-1])  # clipped


def test_session_generates_loads_once_and_writes_the_downloads(session):
    first = session.generate(PROMPT, OBJECTS, steps=2, seed=3)
    again = session.generate(PROMPT, OBJECTS, steps=2, seed=3, threshold_method="competition", threshold=0.3)
    assert session.loads == 1
    assert first.objects == ["circle", "square"] and first.image.size == (64, 64)
    assert (
        first.masks.shape == (2, 64, 64) and first.attention_maps.shape == (2, 32, 32) and first.boxes.shape == (2, 4)
    )
    np.testing.assert_array_equal(np.asarray(first.image), np.asarray(again.image))  # the seed fixes the image
    assert not (again.masks[0] & again.masks[1]).any()  # competition masks never overlap
    masks = [np.asarray(Image.open(f)) > 0 for f in first.files if f.endswith(".png")]
    np.testing.assert_array_equal(np.stack(masks), first.masks)
    row = load_dataset("parquet", data_files=first.files[-1], split="train").cast(sample_features())[0]
    assert row["prompt"] == PROMPT and row["objects"] == ["circle", "square"] and row["seed"] == 3
    np.testing.assert_array_equal(np.stack([np.asarray(m) > 0 for m in row["masks"]]), first.masks)
    assert first.shown.size == first.overlay.size == first.heatmaps[0][0].size == (384, 384)  # 64 px x 6
    np.testing.assert_array_equal(np.asarray(first.shown)[::6, ::6], np.asarray(first.image))
    assert [h[1] for h in first.heatmaps] == [f"{name} {c:.2f}" for name, c in zip(first.objects, first.confidence)]
    np.testing.assert_array_equal(first.confidence, mask_confidence(first.attention_maps, first.masks))
    assert row["confidence"] == pytest.approx(first.confidence.tolist())
    assert first.summary()["mask_shape"] == [2, 64, 64]
    assert first.summary()["confidence"] == [round(float(c), 3) for c in first.confidence]


def test_session_keeps_the_saved_capture_settings_unless_told(session):
    import torch

    from free_atm.masks import maps_to_masks

    pipe = session.pipeline()
    saved = pipe.capture_config
    try:
        pipe.set_capture_config(threshold_method="otsu", refinement="self_attention")
        as_saved = session.generate(PROMPT, OBJECTS, steps=2, seed=3)
        told = session.generate(
            PROMPT,
            OBJECTS,
            steps=2,
            seed=3,
            threshold_method="fixed",
            threshold=0.5,
            refinement="none",
            pixel_refinement=10,
        )
    finally:
        pipe.set_capture_config(saved)
    refined = pipe(
        PROMPT,
        objects=OBJECTS.split(", "),
        num_inference_steps=2,
        guidance_scale=5.0,
        latents=pipe.initial_latents([3], 64, 64),
        capture_config={"threshold_method": "otsu", "refinement": "self_attention"},
        output_type="np",
    )
    np.testing.assert_allclose(as_saved.attention_maps, refined.attention_maps[0], atol=1e-6)
    np.testing.assert_array_equal(as_saved.masks, refined.masks[0])
    pixels = torch.from_numpy(np.asarray(told.image, dtype=np.float32) / 255).permute(2, 0, 1)
    maps = torch.from_numpy(told.attention_maps)
    _, expected, _ = maps_to_masks(maps, (64, 64), "fixed", 0.5, image=pixels, pixel_refinement=10)
    np.testing.assert_array_equal(told.masks, expected)
    with pytest.raises(ValueError, match="pixel_refinement must be an int in \\[0, 100\\], got -2"):
        session.generate(PROMPT, OBJECTS, steps=1, pixel_refinement=-2)


def test_session_errors_name_the_bad_value(session):
    with pytest.raises(ValueError, match="object 'dog' does not occur in prompt 'a red circle and a blue square'"):
        session.generate(PROMPT, "dog", steps=1)
    with pytest.raises(ValueError, match="none of the vocabulary found in prompt 'a red thing'"):
        session.generate("a red thing", "", steps=1)
    with pytest.raises(ValueError, match="the prompt is empty"):
        session.generate("  ", OBJECTS, steps=1)
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        session.generate(PROMPT, OBJECTS, steps=0)
    with pytest.raises(ValueError, match="threshold_method must be one of .* got 'best'"):
        session.generate(PROMPT, OBJECTS, steps=1, threshold_method="best")
    with pytest.raises(ValueError, match="no image given"):
        session.annotate(None, PROMPT, OBJECTS)
    with pytest.raises(ValueError, match="model 'nowhere/' is neither a folder nor a valid Hub id"):
        DemoSession("nowhere/")


def test_annotate_tab_masks_an_uploaded_image(session):
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    result = session.annotate(picture, PROMPT, OBJECTS, timestep=200, noise_draws=2)
    assert result.image.size == (64, 64) and result.masks.shape == (2, 64, 64)
    assert result.files[-1].endswith(".parquet")


@pytest.fixture(scope="module")
def served(session):
    """The app on a free local port, for the module's tests."""
    from free_atm.demo import build_demo, launch_demo

    demo = build_demo(session)
    port = free_port()
    launch_demo(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_client_gets_maps_masks_boxes_and_readable_errors(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(served, verbose=False)
    image, overlay, gallery, details, files = client.predict(
        PROMPT, OBJECTS, 2, 5.0, 0, "fixed", 0.4, False, "self_attention", 5, api_name="/generate"
    )
    assert Image.open(image).size == (384, 384) and Image.open(overlay).size == (384, 384)
    assert [item["caption"] for item in gallery] == [
        f"{n} {c:.2f}" for n, c in zip(["circle", "square"], details["confidence"])
    ]
    assert details["mask_shape"] == [2, 64, 64] and details["attention_map_shape"] == [2, 32, 32]
    assert len(details["boxes"]) == 2 and all(len(box) == 4 for box in details["boxes"])
    pngs = [f for f in files if f.endswith(".png")]
    assert [np.asarray(Image.open(f)).shape for f in pngs] == [(64, 64)] * 2
    with pytest.raises(AppError, match="object 'dog' does not occur in prompt 'a red circle and a blue square'"):
        client.predict(PROMPT, "dog", 2, 5.0, 0, "fixed", 0.4, False, api_name="/generate")


def test_page_in_a_real_browser(served, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"the browser test needs Debian's Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(served)
            # leaving the prompt fills the untouched objects box from the vocabulary (ImageNet's here)
            page.locator("#prompt textarea").fill("a tabby cat and a goldfish in the park")
            page.locator("#prompt textarea").blur()
            expect(page.locator("#objects textarea")).to_have_value("tabby cat, goldfish")
            page.locator("#generate").click()
            result = page.locator(".result-image img").first
            expect(result).to_be_visible(timeout=120_000)
            assert page.evaluate("(img) => img.naturalWidth", result.element_handle()) == 384
            expect(page.get_by_text('"goldfish"').first).to_be_visible()
            shot = tmp_path / "demo_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert Image.open(shot).size[0] == 1280
            page.locator("#objects textarea").fill("dog")
            page.locator("#generate").click()
            expect(page.get_by_text("object 'dog' does not occur in prompt").first).to_be_visible(timeout=60_000)
        finally:
            browser.close()


def test_demo_command_serves_the_page_and_rejects_a_bad_port(capsys, monkeypatch):
    """``free-atm demo`` builds the page for its model and serves it where told (launched here without
    blocking, so the test can read the page and close it)."""
    import free_atm.demo.app as app
    from free_atm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--model", "tiny-random", "--port", "70000"])
    assert exit_info.value.code == 2 and "--port must be between 1 and 65535, got 70000" in capsys.readouterr().err
    with socket.socket() as taken:  # another server holds the port: one line, no traceback, before loading
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--model", "tiny-random", "--port", str(taken.getsockname()[1])])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "another server holds it; choose another --port" in error
    assert "Traceback" not in error
    for option, message in [
        (["--host", "999.1.1.1"], "--host 999.1.1.1 is not a name or address of this machine"),
        (["--host", "192.0.2.7"], "--host 192.0.2.7 is not an address of this machine"),  # TEST-NET-1
        (["--device", "cuda:7"], "--device 'cuda:7' does not exist here: this machine has"),
        (["--device", "tpu"], "--device 'tpu' is not a device name"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--model", "tiny-random", "--port", str(free_port()), *option])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and "Traceback" not in error, error
    launched = []
    launch = app.launch_demo
    monkeypatch.setattr(app, "launch_demo", lambda demo, **options: launched.append(demo) or launch(
        demo, prevent_thread_lock=True, quiet=True, **options))  # fmt: skip
    port = free_port()
    main(["demo", "--model", "tiny-random", "--port", str(port)])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200 and b"free-atm" in response.read()
    finally:
        launched[0].close()
