"""Linear -> ReLU -> Linear -> Softmax -> cross-entropy on a synthetic spiral, watched by backtrace.

Run:  python examples/train_mlp.py [--epochs 30] [--lr 0.05] [--plot loss.svg] [--flow flow.svg]
The data is generated here (3 interleaved spiral arms, 300 points each); it trains in about a second.
"""
from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import backtrace


def spiral(points_per_class: int = 300, classes: int = 3, seed: int = 0):
    """The CS231n spiral: `classes` arms of noisy points in the plane, labels 0..classes-1."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c in range(classes):
        r = torch.linspace(0.0, 1.0, points_per_class)
        t = torch.linspace(c * 4.0, (c + 1) * 4.0, points_per_class) \
            + 0.2 * torch.randn(points_per_class, generator=g)
        xs.append(torch.stack([r * torch.sin(t), r * torch.cos(t)], dim=1))
        ys.append(torch.full((points_per_class,), c))
    return torch.cat(xs), torch.cat(ys)


class MLP(nn.Module):
    """The lecture's network: Linear -> ReLU -> Linear -> Softmax (the loss takes log-probabilities)."""

    def __init__(self, hidden: int = 64, classes: int = 3) -> None:
        super().__init__()
        self.hidden = nn.Linear(2, hidden)
        self.relu = nn.ReLU()
        self.out = nn.Linear(hidden, classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.out(self.relu(self.hidden(x))))


def cross_entropy(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log p(correct class), averaged: the softmax output's cross-entropy."""
    return -torch.log(probs[torch.arange(len(labels)), labels] + 1e-12).mean()


def train(epochs: int = 30, lr: float = 0.05, batch_size: int = 100, optimizer: str = "adam",
          seed: int = 0, log=print):
    """Train and return (watch, final accuracy)."""
    torch.manual_seed(seed)
    x, y = spiral(seed=seed)
    model = MLP()
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    n = len(x)
    with backtrace.watch(model, opt, dataset_size=n, batch_size=batch_size, log=log) as w:
        for _ in range(epochs):
            order = torch.randperm(n)
            for i in range(0, n, batch_size):
                batch = order[i:i + batch_size]
                opt.zero_grad()
                loss = cross_entropy(model(x[batch]), y[batch])
                loss.backward()
                opt.step()
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).double().mean().item()
    return w, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    parser.add_argument("--plot", help="write the loss curve here (.svg/.png)")
    parser.add_argument("--flow", help="write the per-layer gradient-flow chart here (.svg/.png)")
    args = parser.parse_args()
    w, accuracy = train(args.epochs, args.lr, optimizer=args.optimizer)
    from rich.console import Console

    console = Console(highlight=False)
    console.print(w.table(last=5))
    console.print(w.layer_table())
    print(w.loss_curve())
    print(w.summary())
    print(f"training accuracy {accuracy:.1%} (chance is {1 / 3:.1%}); "
          f"first loss {w.losses[0]:.4f} ≈ ln 3 = {math.log(3):.4f}")
    if args.plot:
        w.plot(args.plot)
        print(f"loss curve written to {args.plot}")
    if args.flow:
        w.plot_gradient_flow(args.flow)
        print(f"gradient flow written to {args.flow}")


if __name__ == "__main__":
    main()
