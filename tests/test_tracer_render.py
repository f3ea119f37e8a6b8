"""The torch views render what the trace holds: numbers checked against autograd, on a plain
100-column console."""
from __future__ import annotations

import torch
from torch import nn

import backtrace
from backtrace.compare import compare
from backtrace.engine import run
from backtrace.ir import format_number
from backtrace.parser import parse
from backtrace.render.torch_table import EngineCheck, TorchTraceView, fmt
from backtrace.torch_engine import run as run_torch
from tests.conftest import TEXTBOOK, render_text


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    x = torch.randn(4, 3)
    with backtrace.trace(model=model) as t:
        loss = model(x).sum()
        loss.backward()
    return model, t.trace


def test_trace_view_rows_and_leaf_gradients():
    model, trace = tiny()
    text = render_text(TorchTraceView(trace, "plain"))
    lines = text.splitlines()
    assert lines[1] == ("Backward call 1 (backward, level stats): upstream → each input, in "
                        "execution order")
    first = next(line for line in lines if line.startswith("1 "))
    assert "(loss)" in first and " sum " in first
    assert first.split()[4] == "1"  # the seed: ∂loss/∂loss, a one-element tensor shown as its number
    # the bias's local Jacobian: 8 outputs × 2 bias elements, each output hit by one bias (8 ones)
    bias = next(line for line in lines if " 0.bias " in line and "‖" in line)
    assert f"[8×2] ‖·‖={format_number(8 ** 0.5)}" in bias
    tanh = next(line for line in lines if " tanh " in line)
    assert tanh.split()[3] == "1"  # the module column: nn.Tanh is model[1]
    for name, p in model.named_parameters():
        row = next(line for line in lines if line.startswith(name + " "))
        assert f"‖·‖={format_number(p.grad.norm().item())}" in row, (name, row)


def test_module_filter_keeps_only_that_module():
    _, trace = tiny()
    text = render_text(TorchTraceView(trace, "plain", module="1"))
    assert "module 1)" in text and " tanh " in text
    assert "linear" not in text and "0.weight" not in text


def test_cells():
    t = torch.tensor([[3.0, 4.0]])
    assert fmt(t) == "[1×2] ‖·‖=5 max|·|=4"
    assert fmt(torch.tensor(2.5)) == "2.5" and fmt(None) == "—" and fmt((1.0, None)) == "0: 1; 1: —"


def test_engine_check_table():
    graph = parse(TEXTBOOK[0])
    ref, tor = run(graph, TEXTBOOK[1]), run_torch(graph, TEXTBOOK[1])
    text = render_text(EngineCheck(ref, tor, [compare(ref, tor)], "plain"))
    assert "Torch engine (float64): the same graph through PyTorch autograd" in text
    row = next(line for line in text.splitlines() if line.startswith("%0 "))
    assert row.split() == ["%0", "AddBackward0", "3", "-4", "0", "0"]
