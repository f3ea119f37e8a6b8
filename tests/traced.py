"""Traced models shared by tests and benchmarks."""
from __future__ import annotations

import copy
from typing import Any


def transformer(layers: int = 12, d_model: int = 64, nhead: int = 4, tokens: int = 8,
                oracle: bool = False) -> Any:
    """A TransformerEncoder (feed-forward 2·d_model, no dropout) traced on 2 × `tokens`, its
    output summed. With `oracle`, the output is weighted by a random tensor and the result is
    (trace, per-layer (‖grad in‖, ‖grad out‖) from torch's backward hooks on a twin, so the traced
    run is untouched, the model, whose .grad fields torch filled); else the trace alone."""
    import torch
    from torch import nn

    import backtrace

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=nhead, dim_feedforward=2 * d_model,
                                       batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
    x = torch.randn(2, tokens, d_model, requires_grad=True)
    if not oracle:
        with backtrace.trace(model=model, names={"x": x}) as tracer:
            model(x).sum().backward()
        return tracer.trace
    w = torch.randn(2, tokens, d_model)
    norms: dict[int, tuple[float, float]] = {}
    twin = copy.deepcopy(model)
    for k, block in enumerate(twin.layers):
        block.register_full_backward_hook(lambda m, gin, gout, k=k: norms.__setitem__(
            k, (float(gin[0].norm()), float(gout[0].norm()))))
    (twin(x.detach().clone().requires_grad_(True)) * w).sum().backward()
    with backtrace.trace(model=model, names={"x": x}) as tracer:
        (model(x) * w).sum().backward()
    return tracer.trace, [norms[k] for k in range(layers)], model
