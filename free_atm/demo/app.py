"""The Gradio page: a *generate* tab (prompt, objects, steps, guidance, seed, capture settings) and an
*annotate* tab (an uploaded image with its caption), both showing the image, the masks as outlines with
boxes and names, a heat map per object, the boxes as JSON and the downloads. Errors a person can fix
show as a message on the page."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ..attention import THRESHOLD_METHODS  # noqa: E402
from ..attention.config import REFINEMENTS  # noqa: E402
from ..models.registry import saved_sampling  # noqa: E402
from .session import SAVED, DemoResult, DemoSession  # noqa: E402

#: system fonts only: the page must not wait on a font service it cannot reach
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

INTRO = """# free-atm: masks for free
A text-to-image diffusion model's cross-attention already says where each object it draws is. Type a
prompt; the objects are found in it (or name them yourself) and come back as heat maps, masks and boxes,
and as a one-row dataset in the project's schema. Model: `{model}`."""


def _outputs(result: DemoResult) -> tuple:
    return result.shown, result.overlay, result.heatmaps, result.summary(), result.files


def _reporting(call, progress: gr.Progress) -> tuple:
    """Run ``call`` with the page's progress bar; a ``ValueError`` becomes the page's error message."""
    try:
        return _outputs(call(lambda fraction, description: progress(fraction, desc=description)))
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None


def _result_panel() -> list[Any]:
    with gr.Row():
        image = gr.Image(label="image", type="pil", format="png", elem_classes="result-image")
        overlay = gr.Image(label="masks, boxes and names", type="pil", format="png", elem_classes="result-overlay")
    heatmaps = gr.Gallery(label="attention map of each object", columns=4, height="auto", format="png")
    details = gr.JSON(label="objects and boxes (xyxy pixels)")
    files = gr.File(label="downloads: a PNG mask per object and a one-row dataset (Parquet)", file_count="multiple")
    return [image, overlay, heatmaps, details, files]


def _capture_settings() -> list[Any]:
    with gr.Accordion("capture settings", open=False):
        method = gr.Dropdown(
            [SAVED, *THRESHOLD_METHODS], value=SAVED, label="threshold method (saved: the model's, with its threshold)"
        )
        threshold = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="threshold (competition: background level)")
        largest = gr.Checkbox(value=False, label="keep the largest connected component of each mask")
        refinement = gr.Dropdown(
            [SAVED, *REFINEMENTS], value=SAVED, label="refine the maps along the model's self-attention (UNets)"
        )
        pixels = gr.Dropdown(
            [SAVED, 0, 5, 10, 20], value=SAVED, label="pixel refinement: iterations along the image's colours"
        )
    return [method, threshold, largest, refinement, pixels]


def build_demo(model: str | DemoSession = "shapes") -> gr.Blocks:
    """The page for ``model`` (any value ``free-atm generate --model`` takes, or a ready session)."""
    session = model if isinstance(model, DemoSession) else DemoSession(model)

    def fill_objects(prompt: str, objects: str, filled: str):
        """On leaving the prompt: refill the objects box from the prompt unless the person has edited it
        (an untouched box holds what was filled last); the state remembers the new filling."""
        if objects.strip() and objects != filled:
            return gr.update(), filled
        suggestion = session.suggest_objects(prompt)
        return suggestion, suggestion

    # explicit parameters, not *settings: Gradio places the Progress argument by its position in the signature
    def generate(
        prompt,
        objects,
        steps,
        guidance,
        seed,
        method,
        threshold,
        largest,
        refinement,
        pixels,
        progress=gr.Progress(),  # noqa: B008
    ):
        settings = (method, threshold, largest, refinement, pixels)
        return _reporting(
            lambda report: session.generate(prompt, objects, steps, guidance, seed, *settings, progress=report),
            progress,
        )

    def annotate(
        image,
        caption,
        objects,
        timestep,
        draws,
        method,
        threshold,
        largest,
        refinement,
        pixels,
        progress=gr.Progress(),  # noqa: B008
    ):
        settings = (method, threshold, largest, refinement, pixels)
        return _reporting(
            lambda report: session.annotate(image, caption, objects, timestep, draws, *settings, progress=report),
            progress,
        )

    example = session.example_prompt
    sampling = saved_sampling(session.model)  # the sliders start at the model's saved sampling settings
    with gr.Blocks(title="free-atm") as demo:
        gr.Markdown(INTRO.format(model=session.model))
        with gr.Tab("generate"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="prompt", value=example, elem_id="prompt")
                    filled = gr.State(session.suggest_objects(example))
                    objects = gr.Textbox(
                        label="objects (comma-separated; found in the prompt when left empty)",
                        value=session.suggest_objects(example),
                        elem_id="objects",
                    )
                    with gr.Row():
                        steps = gr.Slider(1, 100, value=sampling.num_inference_steps or 25, step=1, label="steps")
                        guidance = gr.Slider(
                            1.0, 15.0, value=sampling.guidance_scale or 5.0, step=0.5, label="guidance scale"
                        )
                        seed = gr.Number(value=0, precision=0, label="seed")
                    settings = _capture_settings()
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    results = _result_panel()
            prompt.blur(fill_objects, [prompt, objects, filled], [objects, filled], api_name=False)
            button.click(generate, [prompt, objects, steps, guidance, seed, *settings], results, api_name="generate")
        with gr.Tab("annotate"):
            with gr.Row():
                with gr.Column():
                    upload = gr.Image(label="image to annotate", type="pil", elem_id="upload")
                    caption = gr.Textbox(label="caption", elem_id="caption")
                    caption_filled = gr.State("")
                    caption_objects = gr.Textbox(label="objects (comma-separated; found in the caption when empty)")
                    with gr.Row():
                        timestep = gr.Slider(0, 999, value=100, step=1, label="noise timestep")
                        draws = gr.Slider(1, 16, value=4, step=1, label="noise draws averaged")
                    annotate_settings = _capture_settings()
                    annotate_button = gr.Button("Annotate", variant="primary", elem_id="annotate")
                with gr.Column():
                    annotate_results = _result_panel()
            caption.blur(
                fill_objects,
                [caption, caption_objects, caption_filled],
                [caption_objects, caption_filled],
                api_name=False,
            )
            annotate_button.click(
                annotate,
                [upload, caption, caption_objects, timestep, draws, *annotate_settings],
                annotate_results,
                api_name="annotate",
            )
    return demo


def launch_demo(demo: gr.Blocks, **launch_options: Any):
    """Launch with the project's theme (system fonts) and no usage analytics; options go to ``launch``."""
    return demo.launch(theme=THEME, **launch_options)
