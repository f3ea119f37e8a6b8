"""`check_function`: every autograd node a function creates, re-run alone in float64, its backward's
vector-Jacobian product compared with central differences of its forward, input slot by slot."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..values import format_number
from .graphs import parameters
from .text import show, table

if TYPE_CHECKING:
    from .calls import RecordedCall


@dataclass(frozen=True)
class SlotCheck:
    """One input slot of one autograd node: its backward against finite differences."""

    order: int  # position in backward order (0 = nearest the output)
    node: str  # the autograd node's name, e.g. MyMulBackward or MulBackward0
    call: str  # the forward call that made it, e.g. MyMul.apply(x, y)
    slot: int | str
    input: str
    backward: Any  # what the node's backward returned for this slot (a float64 tensor)
    numeric: Any  # the finite-difference vector-Jacobian product
    max_delta: float
    where: tuple[int, ...] | None  # index of the worst element
    ok: bool
    error: str = ""
    upstream: str = ""  # the upstream gradient used, as text


@dataclass
class FunctionCheck:
    """What `check_function` compared: one row per (node, input slot), in backward order."""

    rows: list[SlotCheck] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # nodes no recorded call made: a failure

    @property
    def ok(self) -> bool:
        """True when every node was checked and every slot agreed."""
        return not self.unchecked and all(r.ok for r in self.rows)

    def table(self, around: SlotCheck | None = None) -> str:
        """The rows as a plain table; with `around`, only the nodes next to that row."""
        rows = self.rows
        if around is not None:
            rows = [r for r in rows if abs(r.order - around.order) <= 1]
        return table(["", "#", "node", "call", "slot", "input", "backward", "numeric", "max |Δ|"],
                     [["→" if r is around else ("✗" if not r.ok else "✓"), str(r.order + 1),
                       r.node, r.call, str(r.slot), r.input, r.error or show(r.backward),
                       show(r.numeric), format_number(r.max_delta)] for r in rows])


@dataclass(frozen=True)
class _Numerics:
    """How each slot is checked: tolerances, the difference step, when to sample a direction."""

    rtol: float
    atol: float
    eps: float
    max_elements: int
    generator: Any  # a torch.Generator: the random upstream gradients and directions


def check_function(fn: Any, *example_inputs: Any, rtol: float = 1e-3, atol: float = 1e-5,
                   eps: float = 1e-6, seed: int = 0, max_elements: int = 256) -> FunctionCheck:
    """Check the backward of every autograd node `fn` creates against finite differences.

    `fn` is a custom `torch.autograd.Function` class (or its ``apply``), a function of tensors or
    an `nn.Module`. Each node found in the forward pass is re-run alone in float64 on the same
    inputs; its backward's vector-Jacobian product for a random upstream gradient is compared with
    central differences of its forward, input slot by input slot. Raises AssertionError naming
    the first wrong node in backward order, or a node that could not be checked; returns the
    table of every check otherwise."""
    import torch

    from .calls import key, record, unchecked

    call, label, params = _callable(fn)
    inputs = [_as_float64_leaf(x) for x in example_inputs]
    names = {key(t): n for t, n in zip(inputs, _input_names(params, len(inputs)))
             if isinstance(t, torch.Tensor)}
    if isinstance(call, torch.nn.Module):
        names.update((key(p), n) for n, p in call.named_parameters())
    out, calls = record(call, inputs, _func_label)
    if not any(isinstance(t, torch.Tensor) and t.grad_fn is not None for t in _flat(out)):
        raise UsageError(f"{label}'s output does not depend on any floating-point input, "
                         "so there is no backward to check")
    _name_nodes(calls, names)
    numerics = _Numerics(rtol, atol, eps, max_elements, torch.Generator().manual_seed(seed))
    result = FunctionCheck(unchecked=[_why_unchecked(n) for n in unchecked(out, calls)])
    for order, c in enumerate(reversed(calls)):
        result.rows += _check_call(c, order, names, numerics)
    if not result.ok:
        raise AssertionError(_failure(result, rtol, atol))
    return result


def _callable(fn: Any) -> tuple[Callable[..., Any], str, list[str]]:
    """The thing to call, its name for messages, and its parameter names for the inputs."""
    import copy

    import torch

    from .calls import function_class

    function = function_class(fn)
    if function is not None:  # the class itself, its apply, or an alias of that
        return function.apply, f"{function.__name__}.apply", _forward_parameters(function)
    if isinstance(fn, torch.nn.Module):
        module = copy.deepcopy(fn).double()  # finite differences need float64 parameters
        return module, type(fn).__name__, list(parameters(module.forward))
    if callable(fn):
        try:
            params = list(parameters(fn))
        except UsageError:
            params = []
        return fn, getattr(fn, "__name__", "fn"), params
    raise UsageError(f"check_function needs a function, an nn.Module or an autograd.Function, "
                     f"not {type(fn).__name__}")


def _forward_parameters(function: type) -> list[str]:
    """The input names of a Function's forward: after ctx for old-style Functions, all of them
    for setup_context-style ones (forward(x, y) with a separate setup_context)."""
    import torch

    params = list(parameters(function.forward))
    base = torch.autograd.Function.setup_context
    own = getattr(function.setup_context, "__func__", function.setup_context)
    return params if own is not getattr(base, "__func__", base) else params[1:]


def _input_names(params: list[str], n: int) -> list[str]:
    """A name for each example input: its parameter's, else its position (``input 2``)."""
    return [params[i] if i < len(params) else f"input {i}" for i in range(n)]


def _why_unchecked(node: Any) -> str:
    """What to say about a node no recorded call made."""
    name = type(node).__name__
    if hasattr(type(node), "_forward_cls"):
        return (f"{name} (its Function class was created after check_function began recording, "
                "e.g. inside the checked function: define it at module level)")
    return f"{name} (made by code the recorder does not see)"


def _failure(result: FunctionCheck, rtol: float, atol: float) -> str:
    """The AssertionError's text: the first wrong node in backward order, its numbers, neighbours;
    or the nodes that could not be checked."""
    bad = next((r for r in result.rows if not r.ok), None)
    missed = ("; not checked: " if bad else "") + ", ".join(result.unchecked)
    if bad is None:
        return (f"cannot check {', '.join(result.unchecked)}: no call the recorder saw made it, so "
                "its backward was not compared with anything\n" + result.table())
    what = f"its backward raised {bad.error}" if bad.error else _worst_numbers(bad)
    return (f"backward of {bad.node} ({bad.call}) is wrong at input slot {bad.slot} ({bad.input}): "
            f"{what}; first wrong node in backward order (rtol={rtol:g}, atol={atol:g})"
            f"{missed if result.unchecked else ''}\n" + result.table(around=bad))


def _worst_numbers(bad: SlotCheck) -> str:
    numeric, backward, at = bad.numeric, bad.backward, ""
    if bad.where is not None and hasattr(numeric, "shape") and numeric.numel() > 4:
        # A big tensor: the numbers of its worst element say more than two norms.
        numeric, backward = numeric[bad.where], backward[bad.where]
        at = f"at element {list(bad.where)}: "
    elif bad.where is not None:
        at = f"worst at element {list(bad.where)}: "
    return (f"{at}numeric {show(numeric)}, backward {show(backward)} "
            f"(upstream gradient {bad.upstream}; max |Δ| = {format_number(bad.max_delta)})")


def _as_float64_leaf(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().to(torch.float64).clone().requires_grad_(True)
    return x


def _flat(x: Any) -> list[Any]:
    from .calls import flat
    return flat(x)


def _tensor_name(names: dict, k: Any, node: Any, t: Any) -> str:
    """A tensor's name in messages: given, or made by a call, else its node's type or its shape."""
    from ..values import shape_text

    if k in names:
        return names[k]
    if node is not None:
        return type(node).__name__
    return f"tensor {shape_text(tuple(t.shape))}"


def _call_text(c: RecordedCall, names: dict) -> str:
    """The call as a message shows it, tensors by name: ``MyMul.apply(x, y)``."""
    from .calls import key

    by_slot = {slot: (k, n) for (slot, _), k, n in zip(c.slots(), c.in_keys, c.in_nodes)}
    parts = []
    for i, a in enumerate(c.args):
        if i in by_slot:
            parts.append(_tensor_name(names, *by_slot[i], a))
        elif hasattr(a, "shape"):
            parts.append(_tensor_name(names, key(a), getattr(a, "grad_fn", None), a))
        else:
            parts.append(repr(a))
    return f"{c.label}({', '.join(parts)})"


def _check_call(c: RecordedCall, order: int, names: dict, num: _Numerics) -> list[SlotCheck]:
    """One row per differentiable input slot: this node's backward against differences."""
    import torch

    slots = c.slots()
    fresh = {slot: t.detach().clone().requires_grad_(True) for slot, t in slots}
    text = _call_text(c, names)
    with torch.enable_grad():
        outs = [o for o in c.rerun(fresh) if o.requires_grad]
    ups = [torch.randn(o.shape, generator=num.generator, dtype=torch.float64).to(o.device)
           for o in outs]
    # A random upstream gradient, so a backward that forgets to multiply by it is caught too.
    upstream = show(ups[0]) if len(ups) == 1 and ups[0].numel() == 1 else "random"
    inputs = [_tensor_name(names, k, n, t) for (_, t), k, n in zip(slots, c.in_keys, c.in_nodes)]

    def row(slot: int | str, name: str, *found: Any, error: str = "") -> SlotCheck:
        return SlotCheck(order, c.node, text, slot, name, *found, error, upstream)

    try:
        analytic = torch.autograd.grad(outs, list(fresh.values()), ups, allow_unused=True)
    except Exception as exc:  # a user's backward may raise anything; report where
        return [row(slot, name, None, None, math.inf, None, False,
                    error=f"{type(exc).__name__}: {exc}") for (slot, _), name in zip(slots, inputs)]
    projected = functools.partial(_projected, c, ups)
    return [row(slot, name, *_compare(functools.partial(projected, slot), leaf, g, num))
            for (slot, _), name, leaf, g in zip(slots, inputs, fresh.values(), analytic)]


def _compare(projected: Callable[[Any], float], leaf: Any, g: Any,
             num: _Numerics) -> tuple[Any, Any, float, tuple[int, ...] | None, bool]:
    """(backward, numeric, max |Δ|, worst element, ok) for one slot."""
    import torch

    g = torch.zeros_like(leaf) if g is None else g.detach()
    base = leaf.detach().contiguous()  # a transposed input (x.T) is differenced element by element
    if base.numel() <= num.max_elements:
        return _elementwise(projected, base, g, num)
    return _directional(projected, base, g, num)


def _projected(c: RecordedCall, ups: list[Any], slot: int | str, x: Any) -> float:
    """⟨upstream, outputs⟩ with the slot's tensor replaced by x: what differences are taken of."""
    import torch

    with torch.no_grad():
        got = c.rerun({slot: x})
    return float(sum((u * o.to(torch.float64)).sum() for u, o in zip(ups, got)))


def _elementwise(projected: Callable[[Any], float], base: Any, g: Any,
                 num: _Numerics) -> tuple[Any, Any, float, tuple[int, ...] | None, bool]:
    import torch

    from ..compare import close

    numeric = torch.zeros_like(base)
    for i in range(base.numel()):  # one central difference per element
        e = torch.zeros_like(base)
        e.view(-1)[i] = num.eps
        numeric.view(-1)[i] = (projected(base + e) - projected(base - e)) / (2 * num.eps)
    diff = (g - numeric).abs()
    ok = close(g, numeric, num.rtol, num.atol)
    where = None
    if base.dim() and diff.numel():
        worst = torch.tensor(int(diff.reshape(-1).argmax()))
        where = tuple(int(k) for k in torch.unravel_index(worst, base.shape))
    return g, numeric, float(diff.max()) if diff.numel() else 0.0, where, ok


def _directional(projected: Callable[[Any], float], base: Any, g: Any,
                 num: _Numerics) -> tuple[float, float, float, None, bool]:
    import torch

    from ..compare import close

    # Too many elements for one difference each: compare along a random direction.
    u = torch.randn(base.shape, generator=num.generator, dtype=torch.float64)
    u = u.to(base.device)
    numeric = (projected(base + num.eps * u) - projected(base - num.eps * u)) / (2 * num.eps)
    backward = float((g * u).sum())
    return backward, numeric, abs(backward - numeric), None, close(backward, numeric, num.rtol,
                                                                   num.atol)


def _name_nodes(calls: list[RecordedCall], names: dict) -> None:
    """Name each call by its autograd node (MulBackward0, MulBackward0.1, ...) and its outputs."""
    seen: dict[str, int] = {}
    for c in calls:
        if c.function is not None:  # torch names a Function's node class after it
            base = f"{c.function.__name__}Backward"
        else:
            base = type(c.out_nodes[0]).__name__
        k = seen.get(base, 0)
        seen[base] = k + 1
        c.node = base if k == 0 else f"{base}.{k}"
        for j, out_key in enumerate(c.out_keys):
            names.setdefault(out_key, c.node if len(c.out_keys) == 1 else f"{c.node}[{j}]")


def _func_label(func: Any) -> str:
    """How a torch function is written: Tensor.mul, torch.tanh, F.linear, Tensor.T (a property)."""
    name = getattr(func, "__name__", repr(func))
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    prop = getattr(func, "__self__", None)
    if name == "__get__" and isinstance(getattr(prop, "__objclass__", None), type):  # x.T
        owner, name = prop.__objclass__, prop.__name__
    if owner is not None and hasattr(owner, "__name__") and \
            owner.__name__ not in ("torch", "torch._C._nn"):
        return f"{owner.__name__.replace('TensorBase', 'Tensor')}.{name}"
    module = getattr(func, "__module__", "") or ""
    if module.startswith(("torch.nn.functional", "torch._C._nn")):
        return f"F.{name}"
    return f"torch.{name}" if module.startswith("torch") else name
