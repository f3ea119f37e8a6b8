"""What a node does locally, read while its backward hook runs: its local Jacobians, computed by
re-running the node on basis vectors, and a description of the tensors it saved."""
from __future__ import annotations

from typing import Any

import torch

from ..values import shape_text
from . import compat
from .nodes import NodeInfo


def jacobians(info: NodeInfo, node: Any, grad_inputs: tuple, grad_outputs: tuple,
              local_max: int) -> tuple:
    """Each input slot's local Jacobian (rows: output elements), or a reason it is not computed."""
    rows_total = sum(g.numel() for g in grad_outputs if g is not None)
    sizes = [g.numel() if g is not None else 0 for g in grad_inputs]
    reason = opaque(info)
    if reason is None and node is None:
        reason = "the running node is unknown"
    if reason is None and any(g is None for g in grad_outputs):
        reason = "an output of this node received no gradient"
    grads = [g for g in (*grad_outputs, *grad_inputs) if g is not None]
    if reason is None:
        reason = next((f"the gradients are {why}" for g in grads
                       if (why := compat.readable(g)[1])), None)
    if reason is None and any(g.is_complex() for g in grads):
        # a complex node's backward is linear over the reals only: real basis vectors do not
        # give a matrix that turns every upstream into the contribution
        reason = "complex gradients"
    if reason is None and any(g.layout != torch.strided for g in grads):
        reason = "sparse gradients"
    if reason is None and rows_total * max(sizes, default=0) > local_max:
        reason = "too large"
    if reason is None:
        try:
            rows = _basis_rows(node, grad_inputs, grad_outputs)
        except Exception as exc:  # e.g. saved tensors a checkpoint lets the node unpack only once
            reason = f"the node cannot be re-run: {type(exc).__name__}"
    if reason is not None:
        return not_computed(rows_total, [n if g is not None else None
                                         for n, g in zip(sizes, grad_inputs)], reason)
    out = []
    for slot, n in enumerate(sizes):
        if grad_inputs[slot] is None or any(r is None for r in rows[slot]):
            out.append((None, ""))
        else:
            with compat.no_transforms():  # inside torch.func.grad: the plain numbers
                local = torch.stack([compat.readable(r)[0] for r in rows[slot]])
            out.append((local, f"Jacobian {rows_total}×{n}"))
    return tuple(out)


def not_computed(rows_total: int, sizes: list[int | None], reason: str) -> tuple:
    """Per input slot, (None, why its Jacobian is not computed); "" for a slot that sent nothing."""
    return tuple((None, f"Jacobian {rows_total}×{n} (not computed: {reason})" if n is not None
                  else "") for n in sizes)


def _basis_rows(node: Any, grad_inputs: tuple, grad_outputs: tuple) -> list[list[Any]]:
    """Per input slot, the node's answer to each output basis vector, flat (None: no answer)."""
    rows: list[list[Any]] = [[] for _ in grad_inputs]
    with torch.no_grad():
        for j, g in enumerate(grad_outputs):
            for e in range(g.numel()):
                basis = [x.new_zeros(x.shape) for x in grad_outputs]
                basis[j].view(-1)[e] = 1
                got = node(*basis)
                got = got if isinstance(got, tuple) else (got,)
                for slot, r in enumerate(got):
                    if slot < len(rows):
                        want = grad_inputs[slot]
                        if r is not None and want is not None and r.shape != want.shape:
                            r = r.sum_to_size(want.shape)  # as the engine does (broadcast)
                        rows[slot].append(r.reshape(-1) if r is not None else None)
    return rows


def opaque(info: NodeInfo) -> str | None:
    """Why the node's insides are not ours to re-run or read, if they are not."""
    if "CompiledFunction" in info.torch_type:
        return "torch.compile region"
    if info.stamp is not None and info.stamp.saved_hooks:
        return "saved tensors under checkpoint hooks"
    if info.custom:
        return "custom autograd.Function"
    return None


def saved(info: NodeInfo, node: Any) -> Any:
    """The node's saved tensors, described by name (``self``: ``[3×4] float32``), or why not."""
    if info.custom:
        return "custom autograd.Function: ctx.saved_tensors not read"
    if node is None:
        return "unavailable (the running node is unknown)"
    if info.stamp is not None and info.stamp.saved_hooks:
        return "unavailable (saved-tensor hooks, e.g. torch.utils.checkpoint)"
    described = {}
    for attr in compat.saved_tensor_names(node):
        if attr.startswith("_saved_") and not attr.startswith("_raw"):
            try:
                v = compat.read_saved(node, attr)
            except Exception:  # freed, or a checkpointed tensor already unpacked once
                described[attr[7:]] = "unavailable"
                continue
            if isinstance(v, torch.Tensor) or (isinstance(v, (tuple, list)) and v
                                               and isinstance(v[0], torch.Tensor)):
                described[attr[7:]] = describe(v)
    return described


def describe(v: Any) -> str:
    """A saved value in a few characters: ``[3×4] float32`` for a tensor, else its short repr."""
    if isinstance(v, torch.Tensor):
        return f"{shape_text(v.shape)} {str(v.dtype).removeprefix('torch.')}"
    if isinstance(v, (tuple, list)) and v and isinstance(v[0], torch.Tensor):
        return ", ".join(describe(x) for x in v)
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
