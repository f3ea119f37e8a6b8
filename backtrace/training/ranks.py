"""`watch` across the ranks of a torch.distributed job (DDP, FSDP2, any data-parallel loop).

Each step, every rank puts its figures into one small vector (its loss, its local gradient norm,
and per parameter: norms, exact zeros and bit fingerprints of the gradient it stepped with and of
the weights after the step) and one `all_gather` hands every rank everyone's. From those:
sharded parameters (FSDP2) get their true global norms (the shards combined), and rank 0 sees each
rank's loss and gradient norm side by side, gradients that differ across ranks (not synchronised:
a parameter DDP does not reduce), and weights that differ after a step (`ranks-differ`).
"""
from __future__ import annotations

import torch

from ..tracer import distributed

_F64 = torch.float64


class World:
    """The default process group as `watch` uses it: this rank, the size, where collectives run."""

    def __init__(self, rank: int, size: int, device: torch.device) -> None:
        self.rank, self.size, self.device = rank, size, device
        self.agreed: bool | None = None  # do all ranks watch the same parameters (first step)

    @classmethod
    def current(cls) -> World | None:
        """The running job's world when there is one with more than one rank, else None."""
        where = distributed.world()
        return None if where is None else cls(where[0], where[1], distributed.device())

    def gather(self, payload: torch.Tensor) -> torch.Tensor:
        """Every rank's payload (a 1-d float64 tensor of the same length), stacked [size, n]."""
        return distributed.gather(payload)

    def agree(self, layout: str) -> bool:
        """True when every rank watches the same parameters (names, shapes, sharding): only then
        are figures compared across ranks (one small gather, at the first step)."""
        if self.agreed is None:
            self.agreed = distributed.agree(layout)
        return self.agreed


def split_prints(prints: torch.Tensor) -> torch.Tensor:
    """int64 fingerprints as exact float64 halves (high and low 32 bits), so they survive the
    one float transfer unchanged."""
    return torch.stack([torch.bitwise_right_shift(prints, 32),
                        torch.bitwise_and(prints, 0xFFFFFFFF)], dim=-1).reshape(-1).to(_F64)


def pack(floats: torch.Tensor, prints: torch.Tensor) -> torch.Tensor:
    """One float64 vector: the figures, then the fingerprints' bits (reinterpreted, not converted)."""
    return torch.cat([floats.to(_F64).reshape(-1), prints.reshape(-1).view(_F64)])


def unpack(gathered: torch.Tensor, n_floats: int) -> torch.Tensor:
    """[size, n] gathered vectors -> [size, n_floats + 2·prints] floats with exact fingerprint
    halves, still on the device (read with the step's one transfer)."""
    floats = gathered[:, :n_floats]
    prints = gathered[:, n_floats:].contiguous().view(torch.int64)
    halves = split_prints(prints).reshape(gathered.shape[0], -1)
    return torch.cat([floats, halves], dim=1)
