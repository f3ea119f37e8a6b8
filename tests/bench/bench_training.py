"""Benchmark: what watching costs a training loop, and how fast `descend` steps.

Run: /work/venv/bin/python tests/bench/bench_training.py [--steps 300] [--repeats 5]
Prints medians of interleaved runs and the ratios, measured in this one process.

- watch overhead: the spiral MLP of examples/train_mlp.py (2 -> 64 -> 3, batch 100, Adam), the same
  loop with and without `backtrace.watch` (records, hooks, checks, loss capture).
- descend: steps per second of gradient descent on a formula with the reference engine, against the
  same update written with torch scalars (float64, autograd, torch.optim.SGD).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import backtrace
from backtrace.training import descend

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from train_mlp import MLP, cross_entropy, spiral  # noqa: E402


def loop(steps: int, watched: bool) -> float:
    torch.manual_seed(0)
    x, y = spiral()
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ctx = backtrace.watch(model, opt, dataset_size=len(x), batch_size=100,
                          log=lambda s: None) if watched else None
    start = time.perf_counter()
    if ctx:
        ctx.attach()
    for k in range(steps):
        i = (k * 100) % len(x)
        opt.zero_grad()
        loss = cross_entropy(model(x[i:i + 100]), y[i:i + 100])
        loss.backward()
        opt.step()
    if ctx:
        ctx.detach()
    return time.perf_counter() - start


FORMULA = "L = x**4 - 3*x**2 + x + y**2*x + sin(y)"


def descend_formula(steps: int) -> float:
    start = time.perf_counter()
    descend(FORMULA, {"x": 1.7, "y": -0.3}, lr=0.01, steps=steps)
    return time.perf_counter() - start


def descend_torch(steps: int) -> float:
    start = time.perf_counter()
    x = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x, y], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        (x**4 - 3 * x**2 + x + y**2 * x + torch.sin(y)).backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    loop(20, True), loop(20, False)  # warm up
    plain, watched, ours, theirs = [], [], [], []
    for _ in range(args.repeats):
        plain.append(loop(args.steps, False))
        watched.append(loop(args.steps, True))
        ours.append(descend_formula(args.steps))
        theirs.append(descend_torch(args.steps))
    p, w = statistics.median(plain), statistics.median(watched)
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"spiral MLP, {args.steps} Adam steps: plain {p * 1e3 / args.steps:.3f} ms/step, watched "
          f"{w * 1e3 / args.steps:.3f} ms/step: watch costs {w / p:.2f}x")
    print(f"descend on a 2-variable formula, {args.steps} steps: reference engine "
          f"{args.steps / o:,.0f} steps/s, torch scalars + torch.optim.SGD {args.steps / t:,.0f} "
          f"steps/s: ratio {t / o:.2f}x")


if __name__ == "__main__":
    main()
