"""Retrieval recall: R@1/5/10 of image-text retrieval in both directions, as an ``evaluate`` metric module.

import evaluate
from free_atm.metrics import metric_path
metric = evaluate.load(metric_path("retrieval_recall"))
metric.compute(predictions=score_rows, references=caption_indices)
"""

import datasets
import evaluate

from free_atm.metrics.retrieval import retrieval_recalls

_DESCRIPTION = """Recall at 1, 5 and 10 of image-to-text and text-to-image retrieval from a score matrix,
as BLIP reports it; an image may have several captions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per image, its scores against every text (one row of the score matrix, higher is better).
    references: per image, the indices of the texts that describe it (each text describes one image).
Returns:
    txt_r1, txt_r5, txt_r10: percent of images with one of their captions among their k best texts.
    img_r1, img_r5, img_r10: percent of texts with their image among their k best images.
    txt_r_mean, img_r_mean, r_mean: the means.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        texts = len(predictions[0]) if predictions else 0
        text_image = [-1] * texts
        for image, captions in enumerate(references):
            for text in captions:
                if not 0 <= text < texts or text_image[text] != -1:
                    raise ValueError(f"text {text} is out of range or describes two images")
                text_image[text] = image
        if -1 in text_image:
            raise ValueError(f"text {text_image.index(-1)} describes no image")
        return retrieval_recalls(predictions, text_image)
