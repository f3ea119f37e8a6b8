"""Two ranks on gloo (127.0.0.1, the port given), each running every distributed scenario of
tests/test_distributed.py and writing what it saw to OUTDIR/rankR.json.

Run: python tests/dist_worker.py OUTDIR PORT   (the test starts it with a timeout)
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import backtrace

STEPS = 3


def batch(rank: int, step: int) -> torch.Tensor:
    """Rank `rank`'s batch at `step`: different on every rank (the point of data parallelism)."""
    return torch.randn(8, 3, generator=torch.Generator().manual_seed(100 * step + rank),
                       dtype=torch.float64)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()


def loss_of(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (net(x) - x.sum(1, keepdim=True)).pow(2).mean()


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- DDP

def ddp_run(rank: int, level: str | None, lr: float = 0.1) -> dict:
    """Train STEPS steps under DDP (traced at `level`, or not); digests of everything."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = DDP(model())
    opt = torch.optim.SGD(ddp.parameters(), lr=lr)
    tracer = backtrace.trace(model=ddp, level=level) if level else None
    seen, losses, equal, local_ok = [], [], [], []
    for step in range(STEPS):
        opt.zero_grad()
        x = batch(rank, step)
        if tracer is not None:
            with tracer:
                loss = loss_of(ddp, x)
                loss.backward()
        else:
            loss = loss_of(ddp, x)
            loss.backward()
        if tracer is not None and level == "full":
            trace = tracer.trace
            equal.append(all(torch.equal(trace.grads[n], p.grad) for n, p in ddp.named_parameters()))
            local_ok.append(local_grads_match(ddp, trace, x))
        seen += [p.grad for p in ddp.parameters()]
        opt.step()
        seen += [p.detach().clone() for p in ddp.parameters()]
        losses.append(loss.item())
    out = {"digest": digest(seen), "losses": losses}
    if tracer is not None:
        trace = tracer.trace
        out.update(meta={k: trace.meta.get(k) for k in ("rank", "world_size")},
                   errors=list(trace.meta.get("tracer_errors", ())) + tracer.errors,
                   grads_equal=equal, local_grads=local_ok)
    return out


def local_grads_match(ddp: nn.Module, trace, x: torch.Tensor) -> bool:
    """This rank's own gradient, recomputed by a plain copy of the model on this rank's batch,
    is the trace's meta["local_grad"] (and differs from the all-reduced one)."""
    plain = model()
    plain.load_state_dict(ddp.module.state_dict())
    loss_of(plain, x).backward()
    ok = True
    for (n, p), q in zip(ddp.named_parameters(), plain.parameters()):
        local = trace.node(n).meta["local_grad"]
        ok &= torch.allclose(local, q.grad, rtol=1e-12, atol=1e-14)
        ok &= not torch.equal(local, p.grad)
    return bool(ok)


def ddp_watch(rank: int, diverge: bool, outside: bool, **options) -> dict:
    """A watched DDP loop; with `outside`, a parameter DDP does not reduce; with `diverge`, rank 1
    changes a weight outside DDP after step 2."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = model()
    ddp = DDP(net)
    extra = nn.Parameter(torch.ones(1, dtype=torch.float64))
    params = [*ddp.parameters(), *([extra] * outside)]
    opt = torch.optim.SGD(params, lr=0.1)
    lines, losses = [], []
    with backtrace.watch(ddp, opt, log=lines.append, **options) as w:
        for step in range(4):
            opt.zero_grad()
            x = batch(rank, step)
            loss = loss_of(ddp, x) * (extra if outside else 1.0)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if diverge and step == 1 and rank == 1:
                with torch.no_grad():
                    net[0].weight[0, 0] += 0.01
    return {"findings": [(f.kind, f.layer, f.step, f.message) for f in w.warnings],
            "losses": losses, "ranks": [list(map(list, s.ranks)) for s in w.steps],
            "log": lines}


# ---------------------------------------------------------------- FSDP2

def fsdp_model() -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    net = model()
    for layer in net:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    return fully_shard(net)


def fsdp(rank: int) -> dict:
    """Trace one step of an FSDP2 model at both levels, and watch one optimizer step."""
    out = {}
    for level in ("stats", "full"):
        net = fsdp_model()
        with backtrace.trace(model=net, level=level) as t:
            loss_of(net, batch(rank, 0)).backward()
        trace = t.trace
        grads = {n: (g.numbers() if level == "stats" else g.flatten().tolist())
                 for n, g in trace.grads.items()}
        values = {n.id: (n.value.norm if level == "stats" else n.value.norm().item())
                  for n in trace.nodes if n.kind == "input"}
        out[level] = {"grads": grads, "values": values,
                      "errors": list(trace.meta.get("tracer_errors", ())) + t.errors,
                      "meta": {k: trace.meta.get(k) for k in ("rank", "world_size")}}
    net = fsdp_model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with backtrace.watch(net, opt, log=lambda s: None) as w:
        opt.zero_grad()
        loss_of(net, batch(rank, 0)).backward()
        opt.step()
    rec = w.steps[0]
    out["watch"] = {n: [p.grad_norm, p.backward_norm, p.weight_norm, p.update_norm]
                    for n, p in rec.params.items()}
    out["watch_findings"] = [f.kind for f in w.warnings]
    return out


def work(rank: int, port: int, outdir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        found = {
            "untraced": ddp_run(rank, None),
            "stats": ddp_run(rank, "stats"),
            "full": ddp_run(rank, "full"),
            "other_lr": ddp_run(rank, None, lr=0.2),  # control: the digest does see a change
            "diverge": ddp_watch(rank, diverge=True, outside=False),
            "outside": ddp_watch(rank, diverge=False, outside=True),
            "healthy": ddp_watch(rank, diverge=False, outside=False),
            "every2": ddp_watch(rank, diverge=True, outside=False, ranks_every=2),
            "fsdp": fsdp(rank),
        }
    finally:
        dist.destroy_process_group()
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(found, f)


if __name__ == "__main__":
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=work, args=(r, int(sys.argv[2]), sys.argv[1])) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    sys.exit(max(abs(p.exitcode or 0) for p in procs))
