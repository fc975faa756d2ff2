"""Run under torchrun with an output folder: a MoCo model (same weights on every process) encodes each
process's own images; each process writes to rank<N>.json how far its ShuffleBN keys in eval mode lie from
keys computed locally, and its queue after one training step."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import ResNetConfig

from free_atm.training import InstanceContrastiveConfig, InstanceContrastiveModel

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
config = InstanceContrastiveConfig(
    ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    projection_dim=8,
    hidden_dim=16,
    method="moco",
    queue_size=16,
)
model = InstanceContrastiveModel(config)
torch.manual_seed(1 + rank)
pixels, maps = torch.rand(3, 3, 32, 32), torch.rand(3, 2, 32, 32)
with torch.no_grad():
    model.eval()  # BatchNorm from running statistics: keys do not depend on who shares the batch
    shuffled, local = model.momentum_keys(pixels, maps), model.embed(pixels, maps, key=True)
    model.train()
    valid = torch.ones(3, 2, dtype=torch.bool)
    valid[0, rank] = False  # 5 valid objects on each process
    out = model(pixels, torch.rand(3, 3, 32, 32), maps, torch.rand(3, 2, 32, 32), valid)
record = {
    "rank": rank,
    "key_difference": (shuffled - local).abs().max().item(),
    "valid_objects": out.valid_objects.item(),
    "queue_ptr": int(model.queue_ptr),
    "queue": model.queue[:10].tolist(),
}
(Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(record))
dist.destroy_process_group()
