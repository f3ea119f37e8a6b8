"""The lecture's three learning rates, 0.0001 / 0.01 / 10: takes forever, converges, blows up.

First on a formula (gradient descent on L = (w - 3)², every step computed by backtrace's reference
engine), then on a real PyTorch regression watched by backtrace.watch.

Run:  python examples/learning_rates.py [--plot rates.svg]
"""
from __future__ import annotations

import argparse

import torch

import backtrace
from backtrace.training import descend

RATES = (0.0001, 0.01, 10.0)


def on_a_formula(steps: int = 300):
    """One Descent per rate on L = (w - 3)², from w = 0."""
    return [descend("L = (w - 3)**2", {"w": 0.0}, lr=lr, steps=steps, label=f"lr={lr:g}")
            for lr in RATES]


def on_a_network(lr: float, epochs: int = 5):
    """A small regression net trained with SGD at `lr`; returns the watch."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(500, 1, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with backtrace.watch(model, opt, dataset_size=500, batch_size=50, log=lambda s: None) as w:
        for _ in range(epochs):
            for i in range(0, 500, 50):
                opt.zero_grad()
                loss = torch.mean((model(x[i:i + 50]) - y[i:i + 50]) ** 2)
                loss.backward()
                opt.step()
    return w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", help="write the comparison chart here (.svg/.png)")
    args = parser.parse_args()
    print("Gradient descent on L = (w - 3)**2 from w = 0, 300 steps:")
    runs = on_a_formula()
    for r in runs:
        print(f"  {r.label:>10}: w = {r.final['w']:<12.6g} loss {r.final_loss:<12.4g} {r.verdict}")
    if args.plot:
        from backtrace.training.plots import lr_comparison, save

        save(lr_comparison(runs), args.plot)
        print(f"chart written to {args.plot}")
    print("\nA regression network, SGD, 5 epochs of 10 steps:")
    for lr in RATES:
        w = on_a_network(lr)
        first, last = (sum(w.losses[i:i + 10]) / 10 for i in (0, len(w.losses) - 10))
        kinds = sorted({f.kind for f in w.warnings}) or ["no warnings"]
        print(f"  lr={lr:<7g} mean loss of the first epoch {first:<8.4g} of the last {last:<8.4g}"
              f" {', '.join(kinds)}")


if __name__ == "__main__":
    main()
