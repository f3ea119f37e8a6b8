"""Three runs of one small model, saved for `backtrace diff`: float32, bfloat16 autocast, and a
custom activation whose backward is 1% off in block 1 (the bug to find).

Run:  python examples/diff_runs.py [FOLDER]      (writes fp32.json, bf16.json, off.json)
Then: backtrace diff FOLDER/fp32.json FOLDER/off.json
      backtrace diff FOLDER/fp32.json FOLDER/bf16.json
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import backtrace


class Swish(torch.autograd.Function):
    """x·σ(x) with a hand-written backward; `factor` != 1 is the bug."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.save_for_backward(x)
        ctx.factor = factor
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s)) * ctx.factor, None


class Block(torch.nn.Module):
    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.fc, self.norm, self.factor = torch.nn.Linear(16, 16), torch.nn.LayerNorm(16), factor

    def forward(self, x):
        h = Swish.apply(self.fc(x), self.factor)
        return x + self.norm(h * 0.5)


def model(off: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights in every run
    return torch.nn.Sequential(Block(), Block(off), Block(), torch.nn.Linear(16, 4))


def step(net: torch.nn.Module, bf16: bool = False) -> backtrace.Trace:
    """One traced training step, level full (exact errors in the diff)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)
    with backtrace.trace(model=net, level="full") as t:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x)
        F.cross_entropy(logits.float(), y).backward()
    return t.trace


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    folder.mkdir(parents=True, exist_ok=True)
    runs = {"fp32": step(model()), "bf16": step(model(), bf16=True), "off": step(model(1.01))}
    for name, trace in runs.items():
        (folder / f"{name}.json").write_text(trace.to_json())
    report = backtrace.diff(runs["fp32"], runs["off"])
    first = report.first
    print(report.line())
    print(f"first: {first.node} {first.op} in {first.module} ({first.what}), "
          f"relative error {first.rel_error:.4f}")
    print(f"wrote {', '.join(str(folder / f'{n}.json') for n in runs)}")


if __name__ == "__main__":
    main()
