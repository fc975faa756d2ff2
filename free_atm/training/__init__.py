"""Label-free pretraining on free-atm datasets: views, models, losses, collators, Trainer subclasses."""

from .collate import ObjectMapCollator
from .contrastive_model import ContrastiveOutput, InstanceContrastiveConfig, InstanceContrastiveModel, attentive_pool
from .losses import gather_with_grad, nt_xent
from .probes import knn_accuracy, linear_probe_accuracy, object_features, probe_backbone, shapes_probe_splits
from .recipe import ContrastiveArguments, contrastive_trainer
from .trainer import ContrastiveTrainer, ProbeCallback
from .views import MaskConsistentViews, TwoViews

__all__ = [
    "ContrastiveArguments",
    "ContrastiveOutput",
    "ContrastiveTrainer",
    "InstanceContrastiveConfig",
    "InstanceContrastiveModel",
    "MaskConsistentViews",
    "ObjectMapCollator",
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
