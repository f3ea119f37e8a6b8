"""The tracer under torch.distributed: each rank records its own traces (meta `rank`,
`world_size`), and parameter gradients are the ones the optimizer steps with.

- DDP: backward gives each parameter's AccumulateGrad this rank's own gradient; DDP's all-reduce
  then writes the average into `p.grad` before the backward call returns. A parameter's `grad` in
  the trace is that reduced `p.grad`; this rank's gradient is kept beside it in
  `meta["local_grad"]`.
- FSDP2 (`fully_shard`): forward and backward run on unsharded copies of the parameters, made
  from the shards for each module and freed after it. While an FSDP module's forward runs its
  unsharded parameters are named like the sharded ones (so the graph's leaves keep their names);
  after backward, the gradient and value of each parameter are the true global ones, combined
  from every rank's shard (statistics at level "stats", the gathered tensor at level "full"), with
  this rank's unsharded gradient in `meta["local_grad"]`.

Every rank traces the same model, so the collectives here (one or two small all_gathers per
backward call, one per parameter at level full) run in step on every rank.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import threading
from typing import Any

import torch

from ..traces import Trace, TraceNode
from ..values import TensorStats
from . import batch as batches
from .naming import WeakNames

# How each statistic of TensorStats combines over shards: (per-shard values, per-shard sizes).
COMBINE = {
    "norm": lambda v, n: math.hypot(*v),
    "mean": lambda v, n: sum(x * k for x, k in zip(v, n)) / sum(n) if sum(n) else 0.0,
    "absmax": lambda v, n: max(v),
    "nonfinite": lambda v, n: sum(v),
}


def world() -> tuple[int, int] | None:
    """(rank, world size) of an initialized process group of several ranks, else None."""
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    size = dist.get_world_size()
    return (dist.get_rank(), size) if size > 1 else None


def device() -> torch.device:
    """Where the default group's collectives run: the GPU for nccl, the CPU otherwise (gloo)."""
    import torch.distributed as dist

    if "nccl" in str(dist.get_backend()).lower() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` (same shape on each), stacked along a new first dimension."""
    import torch.distributed as dist

    mine = t.to(device())
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, mine)
    return torch.stack(parts)


def agree(text: str) -> bool:
    """True when every rank passed the same text (one gather of a 48-bit digest, exact in a
    float64): a check before collectives that only line up when the ranks agree."""
    digest = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=6).digest(), "big")
    everyone = gather(torch.tensor([float(digest)], dtype=torch.float64)).reshape(-1).tolist()
    return len(set(everyone)) == 1


def storage_freed(t: torch.Tensor) -> bool:
    """True for a tensor whose memory is gone (FSDP2 frees unsharded parameters after forward):
    reading it would fail, or crash at level full."""
    try:
        return t.layout == torch.strided and t.numel() > 0 and t.device.type != "meta" \
            and t.untyped_storage().nbytes() == 0
    except (RuntimeError, NotImplementedError):
        return False


def _fsdp_module() -> type | None:
    """FSDP2's module class when the user's program loaded it (we never import it ourselves)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return getattr(fsdp, "FSDPModule", None) if fsdp is not None else None


def _is_dtensor(t: Any) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "placements")


class Names:
    """Names FSDP2's unsharded parameters while forward runs (one global forward hook, on only
    once a model holding an FSDP module has been adopted)."""

    def __init__(self, modules: WeakNames, params: WeakNames) -> None:
        self.modules, self.params = modules, params
        self._handle: Any = None
        self._fsdp: type | None = None

    def adopted(self, root: torch.nn.Module) -> None:
        """A model the tracer now knows: hook its FSDP modules' forwards, if it has any."""
        fsdp = _fsdp_module()
        if self._handle is not None or fsdp is None:
            return
        if any(isinstance(m, fsdp) for m in root.modules()):
            self._fsdp = fsdp
            self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # Global forward hooks run before the module's own, so FSDP has not resharded yet.
        if not isinstance(module, self._fsdp):
            return
        path = self.modules.get(module)
        if path is None:
            return
        for name, p in module.named_parameters():
            if not _is_dtensor(p):
                self.params.add(p, f"{path}.{name}" if path else name)

    def stop(self) -> None:
        """Remove the hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def finish(trace: Trace, params: WeakNames, modules: WeakNames, level: str, kind: str) -> Trace:
    """The trace with its rank in meta and, after a backward call, the reduced (DDP) or global
    (FSDP2) gradients of the parameters; unchanged outside a job of several ranks. A failure is
    noted in meta["tracer_errors"], never raised into the user's program."""
    where = world()
    if where is None:
        return trace
    meta = {**trace.meta, "rank": where[0], "world_size": where[1]}
    if kind != "backward":
        return Trace(trace.engine, trace.output, trace.nodes, trace.steps, meta)
    try:
        nodes = _gradients(trace, params, modules, level)
    except Exception as exc:
        meta["tracer_errors"] = (*meta.get("tracer_errors", ()),
                                 f"distributed gradients: {type(exc).__name__}: {exc}")
        nodes = trace.nodes
    return Trace(trace.engine, trace.output, nodes, trace.steps, meta)


def _gradients(trace: Trace, params: WeakNames, modules: WeakNames, level: str) -> Any:
    """The trace's nodes, parameters given the gradients the optimizer steps with."""
    by_name: dict[str, list[torch.Tensor]] = {}
    for p, name in params.live():
        by_name.setdefault(name, []).append(p)
    reduced = _ddp_params(modules)
    ddp: list[tuple[TraceNode, Any]] = []
    sharded: list[tuple[TraceNode, torch.Tensor]] = []
    for node in trace.nodes:
        if node.kind != "input" or node.id not in by_name:
            continue
        objs = by_name[node.id]
        shard = next((p for p in objs if _is_dtensor(p) and p.grad is not None), None)
        if shard is not None:
            sharded.append((node, shard))
        else:
            p = next((p for p in objs if id(p) in reduced and p.grad is not None), None)
            if p is not None:
                ddp.append((node, p.grad))
    grads = _recorded([g for _, g in ddp], level)
    changed = {node.id: _with_grad(node, g, node.value) for (node, _), g in zip(ddp, grads)}
    changed.update(_global(sharded, level))
    return tuple(changed.get(n.id, n) for n in trace.nodes) if changed else trace.nodes


def _ddp_params(modules: WeakNames) -> set[int]:
    """ids of the parameters some DistributedDataParallel module reduces."""
    from torch.nn.parallel import DistributedDataParallel

    found: set[int] = set()
    for m, _ in modules.live():
        if isinstance(m, DistributedDataParallel):
            found.update(id(p) for p in m.parameters() if p.requires_grad)
    return found


def _recorded(ts: list[torch.Tensor], level: str) -> list[Any]:
    """The tracer's recorded form of each tensor: a detached clone (level full) or its
    TensorStats (all brought to the host with one transfer)."""
    batch = batches.Batch(threading.get_ident())
    records = [batches.recorded(t, level, batch) for t in ts]
    pending = [r for r in records if isinstance(r, batches.Pending)]
    batches.resolve(pending)
    return [r.stats() if isinstance(r, batches.Pending) else r for r in records]


def _with_grad(node: TraceNode, grad: Any, value: Any) -> TraceNode:
    """The node with the gradient the optimizer steps with; the rank's own one kept in meta."""
    meta = {**node.meta, "local_grad": node.grad}
    return dataclasses.replace(node, grad=grad, value=value, meta=meta)


def _global(sharded: list[tuple[TraceNode, torch.Tensor]], level: str) -> dict[str, TraceNode]:
    """Sharded parameters' global gradients and values, combined over the ranks (collectives)."""
    if not sharded or not agree("\0".join(sorted(n.id for n, _ in sharded))):
        return {}
    sharded = sorted(sharded, key=lambda item: item[0].id)
    if level == "full":
        with torch.no_grad():
            return {n.id: _with_grad(n, p.grad.full_tensor().detach().clone(),
                                     p.full_tensor().detach().clone()) for n, p in sharded}
    return _global_stats(sharded)


def _global_stats(sharded: list[tuple[TraceNode, torch.Tensor]]) -> dict[str, TraceNode]:
    """One all_gather of every shard's statistics (gradient and value) and size, combined."""
    with torch.no_grad():
        local = [t.to_local().detach() for _, p in sharded for t in (p.grad, p)]
    rows = [(*st.numbers(), float(t.numel())) for st, t in zip(_recorded(local, "stats"), local)]
    # one gather: gloo gathers on the CPU, nccl on the GPU
    gathered = gather(torch.tensor(rows, dtype=torch.float64, device=device())).cpu().tolist()
    # [rank][row][statistic..., numel]
    out = {}
    for i, (node, p) in enumerate(sharded):
        grad, value = (_combined(gathered, 2 * i + j, p) for j in (0, 1))
        out[node.id] = _with_grad(node, grad, value)
    return out


def _combined(gathered: list, row: int, p: torch.Tensor) -> TensorStats:
    sizes = [r[row][-1] for r in gathered]
    numbers = []
    for k, name in enumerate(TensorStats.NUMBERS):
        combine = COMBINE.get(name)
        numbers.append(combine([r[row][k] for r in gathered], sizes) if combine else math.nan)
    return TensorStats.of(tuple(p.shape), str(p.dtype).removeprefix("torch."), numbers)
