"""Data-parallel training on CPU processes (the gloo backend), for backtrace's distributed views.

Each rank trains the same small regression model on its own batches; DDP (or FSDP2 with --fsdp)
averages the gradients. Watch it, or trace it, under torchrun:

    torchrun --nproc-per-node 2 -m backtrace train examples/ddp_train.py
    torchrun --nproc-per-node 2 -m backtrace train examples/ddp_train.py --diverge
    torchrun --nproc-per-node 2 -m backtrace train examples/ddp_train.py --outside
    torchrun --nproc-per-node 2 -m backtrace train examples/ddp_train.py --fsdp
    torchrun --nproc-per-node 2 -m backtrace trace -o trace.json examples/ddp_train.py

--diverge: rank 1 nudges a weight after step 2, outside DDP (the ranks drift apart: ranks-differ).
--outside: a scale parameter the optimizer steps but DDP does not wrap (never synchronised).
Without torchrun it runs as a world of one process.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 instead of DDP")
    parser.add_argument("--diverge", action="store_true")
    parser.add_argument("--outside", action="store_true")
    args = parser.parse_args()
    if "RANK" not in os.environ:  # plain `python examples/ddp_train.py`: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial weights on every rank
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    if args.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        model = fully_shard(net)
    else:
        model = nn.parallel.DistributedDataParallel(net)
    scale = nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = torch.optim.SGD([*model.parameters(), *([scale] * args.outside)], lr=0.05)
    for step in range(args.steps):
        # each rank's own batch
        g = torch.Generator().manual_seed(1000 * step + rank)
        x = torch.randn(16, 3, generator=g, dtype=torch.float64)
        y = x @ torch.tensor([[1.5], [-2.0], [0.5]], dtype=torch.float64)
        opt.zero_grad()
        loss = ((model(x) * (scale if args.outside else 1.0) - y) ** 2).mean()
        loss.backward()
        opt.step()
        if args.diverge and step == 1 and rank == 1:
            with torch.no_grad():
                net[0].weight[0, 0] += 0.01  # outside DDP: only this rank's copy changes
        print(f"rank {rank} step {step + 1} loss {loss.item()!r}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
