"""A NaN gradient through torch.where: the masked branch still computes sqrt of negatives, and
0 (the upstream gradient where torch.where did not choose it) × NaN (sqrt's derivative) = NaN.

Run: backtrace nan examples/nan_where.py   (exit 1: the report names the line below and the fix)
"""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(3):
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    pred = model(x)
    dist = torch.where(pred > 0, torch.sqrt(pred), torch.zeros_like(pred))
    loss = (dist - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.4f}, "
          f"gradients finite: {model[0].weight.grad.isfinite().all().item()}")
