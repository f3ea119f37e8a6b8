"""The lecture's low-level LinearRegression (section 9.1), watched: once right, once with the
gradient zeroing forgotten, so backtrace.watch shows what goes wrong and where.

Run:  python examples/linear_regression_lowlevel.py [--epochs 3] [--lr 0.05]
Data: 1000 samples generated here from y = x·W_true + b_true + noise; batch 100 -> 10 steps per epoch.
"""
from __future__ import annotations

import argparse

import torch

import backtrace

W_TRUE = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
B_TRUE = torch.tensor([1.0, -2.0])


class LinearRegression:
    """y = x @ w + b with w (2×2) and b (2) tracked by autograd, exactly as in the lecture."""

    def __init__(self) -> None:
        # requires_grad=True tells PyTorch to track operations on these to compute gradients later
        self.w = torch.randn(2, 2, requires_grad=True)
        self.b = torch.randn(2, requires_grad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b

    def loss_fn(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Mean squared error: the average of (prediction - actual)²."""
        return torch.mean((y_pred - y_true) ** 2)


def train_step(model: LinearRegression, features, labels, lr: float, zero_grad: bool = True):
    """Forward, loss, backward, W = W - α·∂L/∂W under no_grad, then reset the gradients."""
    predictions = model.forward(features)
    loss = model.loss_fn(predictions, labels)
    loss.backward()  # computes all gradients
    with torch.no_grad():
        model.w -= lr * model.w.grad
        model.b -= lr * model.b.grad
        if zero_grad:  # forgetting this makes every later gradient the sum of all earlier ones
            model.w.grad.zero_()
            model.b.grad.zero_()
    return loss


def make_data(n: int = 1000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, x @ W_TRUE + B_TRUE + 0.1 * torch.randn(n, 2, generator=g)


def run(zero_grad: bool, epochs: int = 3, lr: float = 0.05, batch: int = 100, log=print):
    """Train one model; return (watch, model)."""
    torch.manual_seed(0)
    x, y = make_data()
    model = LinearRegression()
    with backtrace.watch(model, dataset_size=len(x), batch_size=batch, log=log) as w:
        for _ in range(epochs):
            for i in range(0, len(x), batch):
                loss = train_step(model, x[i:i + batch], y[i:i + batch], lr, zero_grad)
                w.step(loss)  # no optimizer here: tell watch that an update happened
    return w, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    for zero_grad in (True, False):
        title = "with grad.zero_()" if zero_grad else "grad.zero_() FORGOTTEN"
        print(f"=== {title} ===")
        w, model = run(zero_grad, args.epochs, args.lr)
        print(w.loss_curve(height=5))
        print(w.summary())
        error = (model.w.detach() - W_TRUE).abs().max().item()
        print(f"learned w = {model.w.detach().tolist()}, b = {model.b.detach().tolist()}")
        print(f"largest error in w: {error:.3g}\n")


if __name__ == "__main__":
    main()
