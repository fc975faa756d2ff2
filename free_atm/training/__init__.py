"""Label-free pretraining on free-atm datasets.

What every framework shares lives here (sources and mixing, row decoding, the collator, mask-consistent
views, attentive pooling, probes and their callback, the base Trainer, run settings); each framework is a
subpackage with its model, losses, Trainer subclass and arguments: :mod:`.contrastive` (SimCLR, MoCo-v2)
and :mod:`.mae` (attention-guided masked autoencoding).
"""

from .arguments import DataArguments
from .callbacks import Probe, ProbeCallback
from .collate import ObjectMapCollator
from .contrastive import (
    ContrastiveArguments,
    ContrastiveOutput,
    ContrastiveTrainer,
    InstanceContrastiveConfig,
    InstanceContrastiveModel,
    contrastive_trainer,
    gather_with_grad,
    nt_xent,
)
from .pooling import attentive_pool
from .probes import knn_accuracy, linear_probe_accuracy, object_features, probe_backbone, shapes_probe_splits
from .trainer import FreeATMTrainer
from .views import MaskConsistentViews, OneView, TwoViews

__all__ = [
    "ContrastiveArguments",
    "ContrastiveOutput",
    "ContrastiveTrainer",
    "DataArguments",
    "FreeATMTrainer",
    "InstanceContrastiveConfig",
    "InstanceContrastiveModel",
    "MaskConsistentViews",
    "ObjectMapCollator",
    "OneView",
    "Probe",
    "ProbeCallback",
    "TwoViews",
    "attentive_pool",
    "contrastive_trainer",
    "gather_with_grad",
    "knn_accuracy",
    "linear_probe_accuracy",
    "nt_xent",
    "object_features",
    "probe_backbone",
    "shapes_probe_splits",
]
