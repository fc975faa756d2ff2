"""Training scripts, shipped in the wheel as ``free_atm.trainers``: run one with
``accelerate launch -m free_atm.trainers.train_contrastive ...`` (or ``python -m``, ``torchrun -m``), or,
from a checkout, as ``trainers/<script>.py``."""
