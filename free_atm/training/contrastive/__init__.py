"""Instance-level contrastive pretraining (Free-ATM section 3.3.1): SimCLR and MoCo-v2, instance and image
level."""

from ..distributed import gather_with_grad
from .losses import moco_infonce, nt_xent
from .model import ContrastiveOutput, InstanceContrastiveConfig, InstanceContrastiveModel
from .recipe import ContrastiveArguments, contrastive_trainer
from .trainer import ContrastiveTrainer

__all__ = [
    "ContrastiveArguments",
    "ContrastiveOutput",
    "ContrastiveTrainer",
    "InstanceContrastiveConfig",
    "InstanceContrastiveModel",
    "contrastive_trainer",
    "gather_with_grad",
    "moco_infonce",
    "nt_xent",
]
