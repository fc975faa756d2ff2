"""The contrastive losses, one a module: NT-Xent (SimCLR) and MoCo's InfoNCE."""

from .moco_infonce import moco_infonce
from .nt_xent import nt_xent

__all__ = ["moco_infonce", "nt_xent"]
