"""The tracer's example scripts run in seconds and print numbers checked against autograd."""
from __future__ import annotations

import re

import torch
from torch import nn

from .conftest import run_example


def test_mlp_example_traces_the_seed_network():
    out = run_example("mlp.py")
    assert "traced gradients equal .grad bit for bit: True" in out
    for op in ("softmax", "linear", "relu", "log", "mean"):
        assert re.search(rf"\s{op}\s", out), op
    # the same network and batch, untraced: the printed loss and fc2.bias gradient norm agree
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=1))
    x, y = torch.randn(32, 2), torch.randint(0, 3, (32,))
    probs = model(x)
    loss = -torch.log(probs[torch.arange(32), y]).mean()
    loss.backward()
    assert f"loss = {loss.item():.6f}" in out
    leaves = out.split("reaching each")[1]
    bias = re.search(r"fc2\.bias\s+fc2\s+\[3\] ‖·‖=\S+ max\|·\|=\S+\s+\[3\] ‖·‖=(\S+)", leaves)
    assert float(bias.group(1)) == float(f"{model[2].bias.grad.norm().item():.6g}")


def test_transformer_block_example():
    out = run_example("transformer_block.py")
    assert "module self_attn" in out and "multi_head_attention_forward" in out
    norms = dict(re.findall(r"^  (\S+)\s+([0-9.]+)$", out, re.M))
    assert set(norms) >= {"self_attn", "linear1", "linear2", "norm1", "norm2"}
    assert all(float(v) > 0 for v in norms.values())
