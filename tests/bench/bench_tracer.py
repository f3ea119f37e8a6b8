"""The tracer's cost: one training step (forward + backward) traced vs untraced, beside what else
a user could run instead, on an MLP, a transformer encoder block and a tiny GPT.

Run: python tests/bench/bench_tracer.py [--repeats 15] [--device cuda] [--threads N] [--only gpt]

Every contender runs the same step, interleaved (each repeat runs them all, in a rotating order,
in one process); the table gives medians and the ratio to the untraced step:

- untraced: the step alone.
- stats, full: inside `backtrace.trace(model=..., level=...)` (entering and leaving the tracer
  included). A Trace is built when first read; `stats + read` also reads `t.trace` (builds it,
  and its statistics come to the host) inside the timed region; `stats, left on` is one tracer
  kept for every step of a model (max_traces=1), as around a training loop.
- hooks (floor): plain `Node.register_hook` post-hooks on every node, each recording the norms of
  the gradients it sends (one transfer at the end): the least a per-node recorder can cost.
- detect_anomaly: the step under `torch.autograd.detect_anomaly()`.
- torchlens: `torchlens.trace(..., save_grads=True)` then `log_backward(loss)`, when torchlens is
  installed (`pip install torchlens`; it installs beside torch 2.13.0 without replacing it).

Targets (issue "The tracer cheap enough to leave on"): stats <= 1.15x on the MLP and the block,
<= 2.0x on the tiny GPT, never slower than full; full <= 2.0x.
Models:
- MLP: Linear(1024, 3072) -> ReLU -> Linear(3072, 2048) -> ReLU -> Linear(2048, 10), batch 256,
  cross-entropy.
- block: nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024), batch 32 of 128
  tokens, MSE to a random target.
- gpt: tests/bench/tiny_gpt.py (2 layers, 2 heads, n_embd 32, block 16, vocab 65), batch 8.
With --device cuda each timed step ends with one torch.cuda.synchronize(), and the traced step is
also run once under torch.cuda.set_sync_debug_mode("error"): the tracer must not synchronize.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import backtrace

sys.path.insert(0, str(Path(__file__).parent))
from tiny_gpt import TinyGPT  # noqa: E402


@dataclass
class Case:
    name: str
    model: nn.Module
    inputs: tuple
    loss: Callable[[torch.Tensor], torch.Tensor]  # of the model's output

    def step(self) -> torch.Tensor:
        return self.loss(self.model(*self.inputs))


def mlp_case(device: str) -> Case:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 3072), nn.ReLU(), nn.Linear(3072, 2048), nn.ReLU(),
                          nn.Linear(2048, 10)).to(device)
    x, y = torch.randn(256, 1024, device=device), torch.randint(0, 10, (256,), device=device)
    return Case("MLP 1024-3072-2048-10, batch 256", model, (x,),
                lambda out: nn.functional.cross_entropy(out, y))


def block_case(device: str) -> Case:
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024, dropout=0.0,
                                       batch_first=True).to(device)
    x, target = torch.randn(32, 128, 256, device=device), torch.randn(32, 128, 256, device=device)
    return Case("TransformerEncoderLayer d256, 32x128 tokens", model, (x,),
                lambda out: nn.functional.mse_loss(out, target))


def gpt_case(device: str) -> Case:
    torch.manual_seed(0)
    model = TinyGPT().to(device)
    idx = torch.randint(0, 65, (8, 16), device=device)
    targets = torch.randint(0, 65, (8, 16), device=device)
    return Case("tiny GPT 2 layers, 2 heads, n_embd 32, batch 8x16", model, (idx, targets),
                lambda loss: loss)


CASES = {"mlp": mlp_case, "block": block_case, "gpt": gpt_case}


# -- contenders: each runs one step of the case
def untraced(case: Case) -> None:
    case.step().backward()


def traced(level: str, read: bool) -> Callable[[Case], None]:
    def run(case: Case) -> None:
        with backtrace.trace(model=case.model, level=level) as t:
            case.step().backward()
        if read:
            assert t.trace.steps
    return run


class LeftOn:
    """level stats left on: one tracer (max_traces=1) for all the steps of a case, as around a
    training loop; entering and leaving it are not timed (it is left off between steps only so
    that the other contenders run untraced)."""

    def __init__(self) -> None:
        self.tracers: dict[int, backtrace.tracer.Tracer] = {}

    def __call__(self, case: Case, clock: Callable[[], float]) -> float:
        t = self.tracers.setdefault(id(case), backtrace.trace(model=case.model, max_traces=1))
        with t:
            start = clock()
            case.step().backward()
            return clock() - start


def hooks_floor(case: Case) -> None:
    loss = case.step()
    nodes, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        stack.extend(child for child, _ in node.next_functions)
    norms: list[torch.Tensor] = []

    def hook(grad_inputs, grad_outputs):
        norms.extend(torch.linalg.vector_norm(g) for g in grad_inputs if g is not None)

    handles = [n.register_hook(hook) for n in nodes]
    loss.backward()
    for h in handles:
        h.remove()
    torch.stack(norms).tolist()


def anomaly(case: Case) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Anomaly Detection has been enabled"
        with torch.autograd.detect_anomaly():
            case.step().backward()


def torchlens_contender() -> Callable[[Case], None] | None:
    try:
        import torchlens
        from torchlens.options import CaptureOptions
    except ImportError:
        return None

    def run(case: Case) -> None:
        log = torchlens.trace(case.model, list(case.inputs),
                              capture=CaptureOptions(save_grads=True, unwrap_when_done=True))
        log.log_backward(case.loss(log[log.output_layers[-1]].out))
        log.cleanup()
    return run


def contenders(with_torchlens: bool) -> dict[str, Callable[[Case], None]]:
    found = {"untraced": untraced, "stats": traced("stats", False),
             "stats + read": traced("stats", True), "stats, left on": LeftOn(),
             "full": traced("full", False),
             "hooks (floor)": hooks_floor, "detect_anomaly": anomaly}
    lens = torchlens_contender() if with_torchlens else None
    if lens is not None:
        found["torchlens"] = lens
    elif with_torchlens:
        print("torchlens: not installed, skipped (pip install torchlens; it keeps torch 2.13.0)")
    return found


def timed(run: Callable[[Case], None], case: Case, clock: Callable[[], float]) -> float:
    case.model.zero_grad(set_to_none=True)
    gc.collect()
    sync = torch.cuda.synchronize if case.inputs[0].is_cuda else (lambda: None)
    sync()
    if isinstance(run, LeftOn):  # times its own step
        return run(case, lambda: (sync(), clock())[1])
    start = clock()
    run(case)
    sync()
    return clock() - start


def check_no_sync(case: Case) -> None:
    """On CUDA: the traced step must not synchronize with the device (reading the trace may)."""
    try:
        with backtrace.trace(model=case.model) as t:
            torch.cuda.set_sync_debug_mode("error")
            try:
                case.step().backward()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    except RuntimeError as exc:
        print(f"  {case.name}: the traced step synchronized with the device: {exc}")
        return
    assert t.trace.steps and not t.trace.meta.get("tracer_errors"), t.trace.meta
    print(f"  {case.name}: no device synchronization in the traced step")


def bench(case: Case, runs: dict[str, Callable[[Case], None]], repeats: int,
          clock: Callable[[], float]) -> dict[str, float]:
    names = list(runs)
    for name in names:  # warm-up: allocator, kernels, first-call caches
        timed(runs[name], case, clock)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate: no contender always first
        for name in order:
            times[name].append(timed(runs[name], case, clock))
    med = {n: statistics.median(v) for n, v in times.items()}
    params = sum(p.numel() for p in case.model.parameters())
    print(f"\n{case.name} ({params / 1e6:.2f}M parameters), medians of {repeats}")
    for name in names:
        print(f"  {name:16s} {med[name] * 1e3:9.2f} ms  {med[name] / med['untraced']:6.2f}x")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--only", choices=list(CASES), action="append",
                        help="run only this model (repeatable)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this thread's CPU time (steadier on a shared machine, "
                             "with --threads 1)")
    parser.add_argument("--no-torchlens", action="store_true")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: nothing to run with --device cuda")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"{args.clock} clock, {args.repeats} interleaved repeats")
    runs = contenders(not args.no_torchlens)
    for key in args.only or list(CASES):
        case = CASES[key](args.device)
        if args.device.startswith("cuda"):
            check_no_sync(case)
        bench(case, runs, args.repeats, clock)


if __name__ == "__main__":
    main()
