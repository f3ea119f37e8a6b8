"""The seed network, traced: Linear -> ReLU -> Linear -> Softmax -> cross-entropy on one batch.

Run:  python examples/mlp.py
Prints every backward step autograd ran (upstream gradient, each input's local derivative and
contribution), then each parameter's gradient, and checks the trace against `.grad`.
"""
from __future__ import annotations

import torch
from torch import nn

import backtrace


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(2, 16))
    model.add_module("relu", nn.ReLU())
    model.add_module("fc2", nn.Linear(16, 3))
    model.add_module("softmax", nn.Softmax(dim=1))
    x = torch.randn(32, 2)  # a batch of 32 points in the plane
    y = torch.randint(0, 3, (32,))  # and their classes

    with backtrace.trace(model=model, names={"x": x}, level="full") as t:
        probs = model(x)
        loss = -torch.log(probs[torch.arange(len(y)), y]).mean()  # cross-entropy of the softmax
        loss.backward()

    trace = t.trace
    backtrace.show(trace, "plain")
    same = all(torch.equal(trace.grads[name], p.grad) for name, p in model.named_parameters())
    print(f"\nloss = {loss.item():.6f}; {len(trace.nodes)} nodes, {len(trace.steps)} backward steps; "
          f"traced gradients equal .grad bit for bit: {same}")


if __name__ == "__main__":
    main()
