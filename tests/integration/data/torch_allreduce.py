"""torchrun test program: all_reduce of rank + 1 over the gloo backend; every rank prints the sum."""

import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
value = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(value)
print(
    f"rank={dist.get_rank()} world={dist.get_world_size()} host={os.uname().nodename} sum={value.item():.0f}"
)
dist.destroy_process_group()
