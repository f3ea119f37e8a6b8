"""Draw the README's pictures again: python examples/pictures/make.py"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import backtrace

HERE = Path(__file__).parent


def main() -> None:
    fanout = backtrace.explain("a = x * x; b = x + 1; f = a * b", x=3)
    backtrace.export(fanout, HERE / "fanout.png")
    torch.manual_seed(0)
    model = nn.Sequential()  # the seed network of examples/mlp.py
    model.add_module("fc1", nn.Linear(2, 16))
    model.add_module("relu", nn.ReLU())
    model.add_module("fc2", nn.Linear(16, 3))
    x, y = torch.randn(32, 2), torch.randint(0, 3, (32,))
    with backtrace.trace(model=model, names={"x": x}) as t:
        nn.functional.cross_entropy(model(x), y).backward()
    backtrace.export(t.trace, HERE / "mlp.png")


if __name__ == "__main__":
    main()
