"""Label-free pretraining on free-atm datasets: views, models, losses, collators, Trainer subclasses."""

from .collate import ObjectMapCollator
from .contrastive_model import ContrastiveOutput, InstanceContrastiveConfig, InstanceContrastiveModel, attentive_pool
from .losses import gather_with_grad, nt_xent
from .probes import knn_accuracy, object_features
from .trainer import ContrastiveTrainer, KnnProbeCallback
from .views import MaskConsistentViews, TwoViews

__all__ = [
    "ContrastiveOutput",
    "ContrastiveTrainer",
    "InstanceContrastiveConfig",
    "InstanceContrastiveModel",
    "KnnProbeCallback",
    "MaskConsistentViews",
    "ObjectMapCollator",
    "TwoViews",
    "attentive_pool",
    "gather_with_grad",
    "knn_accuracy",
    "nt_xent",
    "object_features",
]
