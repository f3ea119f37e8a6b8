"""Which tensors a Watch follows, and their names: a module's named parameters (with the layer
each belongs to and its type), a dict, an object holding tensors, a list, and whatever else the
optimizer steps."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import UsageError


def named_parameters(model: Any, optimizer: Any = None) -> tuple[dict[str, torch.Tensor],
                                                                  dict[str, str], dict[str, str]]:
    """(name -> parameter, name -> layer, layer -> module type) for a module, a dict, an object
    holding tensors (the lecture's LinearRegression), a list of tensors, or just an optimizer."""
    params: dict[str, torch.Tensor] = {}
    layers: dict[str, str] = {}
    kinds: dict[str, str] = {}
    if isinstance(model, torch.nn.Module):
        modules = dict(model.named_modules())
        for name, p in model.named_parameters():
            layer = name.rpartition(".")[0] or name
            params[name], layers[name] = p, layer
            kinds[layer] = type(modules.get(layer, p)).__name__ if layer in modules else "Parameter"
    elif isinstance(model, Mapping):
        params = {str(k): v for k, v in model.items() if isinstance(v, torch.Tensor)}
    elif isinstance(model, torch.Tensor):
        params = {"param": model}
    elif model is not None and hasattr(model, "__dict__") and not isinstance(model, (list, tuple)):
        params = {k: v for k, v in vars(model).items() if isinstance(v, torch.Tensor)}
    elif model is not None:
        params = {f"param{i}": p for i, p in enumerate(model) if isinstance(p, torch.Tensor)}
    params = {k: p for k, p in params.items() if p.requires_grad}
    if optimizer is not None:
        known = {id(p) for p in params.values()}
        for g, group in enumerate(optimizer.param_groups):
            for i, p in enumerate(group["params"]):
                if id(p) not in known:
                    params[f"group{g}.param{i}"] = p
                    known.add(id(p))
    if not params:
        raise UsageError("nothing to watch: the model has no tensors that require gradients")
    for name in params:
        layers.setdefault(name, name)
    return params, layers, kinds
