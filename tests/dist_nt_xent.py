"""Run under torchrun with an output folder: each process holds half the objects and writes its loss,
the global count of valid objects and its gradient to rank<N>.json there."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from free_atm.training.contrastive.losses import nt_xent

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
z1_all, z2_all = torch.randn(8, 5), torch.randn(8, 5)
valid_all = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1]).bool()
part = slice(4 * rank, 4 * rank + 4)
z1 = z1_all[part].clone().requires_grad_(True)
loss, metrics = nt_xent(z1, z2_all[part], valid_all[part], 0.3)
loss.backward()
record = {"rank": rank, "loss": loss.item(), "valid": metrics["valid_objects"].item(), "grad": z1.grad.tolist()}
(Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(record))
dist.destroy_process_group()
