"""Gradient assertions for tests: engines compared node by node, custom backwards checked against
finite differences, golden traces. Importable without pytest; torch loads only when asked for.

    assert_grads("f = (x + y) * z", {"x": -2, "y": 5, "z": -4}, expected={"x": -4})
    check_function(MyMul, torch.randn(3), torch.randn(3))
    assert_trace_matches(trace, "tests/golden/name.json")
"""
from __future__ import annotations

import inspect
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .ir import CONST, INPUT, Graph
from .values import format_number
from .errors import TraceFormatError
from .traces import Trace

__all__ = ["assert_grads", "assert_trace_matches", "check_function", "explain_function",
           "function_graph", "FunctionCheck"]

ENGINES = ("reference", "torch", "numeric")

# Set by the pytest plugin's --backtrace-update (or BACKTRACE_UPDATE=1): goldens are rewritten.
update_goldens = False

# The pytest fixture points this at its recorder so traces made here show up in failure reports.
_on_trace: Callable[[Trace], None] | None = None


def _record(trace: Trace) -> Trace:
    if _on_trace is not None:
        _on_trace(trace)
    return trace


# ---------------------------------------------------------------- Python functions as graphs

def function_graph(f: Callable[..., Any] | str, **values: float) -> Graph:
    """The graph of a formula, or of a Python function run once on `backtrace.Value` inputs.

    Intermediate values are named after the function's local variables (``q = x + y`` names the
    node ``q``); the output is named after the returned variable, else ``f``. The function runs at
    `values` (0.5 for inputs not given): the graph does not depend on them, the domain does."""
    from .parser import parse
    if isinstance(f, str):
        return parse(f)
    names = _parameters(f)
    return _function_graph(f, names, {n: values.get(n, 0.5) for n in names})


def _parameters(f: Callable[..., Any]) -> tuple[str, ...]:
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        raise UsageError(f"cannot read the parameters of {f!r}; pass the input names") from None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                     p.KEYWORD_ONLY))


def _function_graph(f: Callable[..., Any], names: tuple[str, ...],
                    values: Mapping[str, float]) -> Graph:
    from .value import Value, to_graph

    leaves = {n: Value(float(values[n]), n) for n in names}
    out, local_names = _call_capturing_locals(f, leaves)
    if not isinstance(out, Value):
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            out = Value(out, _op=CONST)
        else:
            raise UsageError(f"{getattr(f, '__name__', 'f')} returned {type(out).__name__}, not a "
                             "number: write it with operators and backtrace.math functions")
    if out not in local_names and "f" not in leaves:
        local_names[out] = "f"
    graph = to_graph(out, tuple(leaves.values()), local_names, getattr(f, "__name__", ""))
    strangers = [n.id for n in graph.nodes if n.op == INPUT and n.id not in leaves]
    if strangers:
        raise UsageError(f"{f!r} uses a Value ({strangers[0]}) that is not one of its inputs")
    return graph


def _call_capturing_locals(f: Callable[..., Any], leaves: dict) -> tuple[Any, dict]:
    """Call f and read its local variables as it returns, to name the nodes as the user did."""
    from .value import Value

    code = getattr(f, "__code__", None)
    captured: dict[str, Any] = {}

    def profile(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event == "return" and frame.f_code is code:
            captured.update(frame.f_locals)

    previous = sys.getprofile()
    sys.setprofile(profile if code is not None else previous)
    try:
        bound = inspect.signature(f).bind(**leaves)
        out = f(*bound.args, **bound.kwargs)
    finally:
        sys.setprofile(previous)
    names: dict[Value, str] = {}
    for name, v in captured.items():
        if name not in leaves and not name.startswith("_") and isinstance(v, Value):
            names.setdefault(v, name)
    return out, names


# ---------------------------------------------------------------- engines

def _inputs(f: Callable[..., Any] | str, inputs: Mapping[str, float] | Sequence[float]) -> dict:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(f, str):
        raise UsageError("give a formula's inputs as a dict name -> value")
    return dict(zip(_parameters(f), inputs, strict=True))


def _graph_for(f: Callable[..., Any] | str, values: Mapping[str, float]) -> Graph:
    from .parser import parse
    if isinstance(f, str):
        return parse(f)
    return _function_graph(f, _parameters(f), values)


def _run_engine(engine: str, graph: Graph, values: Mapping[str, float]) -> Trace:
    """One engine's Trace of a graph (both engines use the graph's node ids)."""
    if engine == "reference":
        from .engine import run
        return run(graph, values)
    if engine == "torch":
        from .torch_engine import run as run_torch
        return run_torch(graph, values)
    raise UsageError(f"unknown engine {engine!r}; choose from reference, torch")


def explain_function(f: Callable[..., Any] | str, engine: str = "reference",
                     **values: float) -> Trace:
    """The Trace of a Python function (or formula) at the given input values.

    `engine="reference"` runs it on `backtrace.Value`; `engine="torch"` calls the same function on
    float64 torch tensors inside `backtrace.trace` and returns the recorded backward pass."""
    if engine == "torch" and not isinstance(f, str):
        return _record(_explain_on_torch(f, values))
    return _record(_run_engine(engine, _graph_for(f, values), values))


def _explain_on_torch(f: Callable[..., Any], values: Mapping[str, float]) -> Trace:
    import torch

    from .tracer import trace as tracer

    leaves = {n: torch.tensor(float(v), dtype=torch.float64, requires_grad=True)
              for n, v in values.items()}
    with tracer(names=leaves, level="full") as t:
        out = f(**leaves)
        if not isinstance(out, torch.Tensor) or out.grad_fn is None:
            raise UsageError(f"{getattr(f, '__name__', 'f')} does not depend on its inputs on torch")
        out.backward()
    return t.trace


# ---------------------------------------------------------------- comparing numbers

def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """backtrace's tolerance rule, where a missing value (None) is no opinion."""
    from .compare import close

    return a is None or b is None or close(a, b, rtol, atol)


def _show(v: Any) -> str:
    """A number short; a small tensor as a list; a bigger one by shape and norm."""
    from .values import describe

    return describe(v, listed=4)


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain text table (rich, no colour), as a string."""
    from .render import to_text
    from .render.tables import table as make_table

    table = make_table(columns)
    for row in rows:
        table.add_row(*row)
    return to_text(table, width=160)


# ---------------------------------------------------------------- assert_grads

_WHAT = ("value", "gradient", "upstream", "local", "contribution")


@dataclass(frozen=True)
class _Item:
    """One compared quantity of one node: its value, its gradient, or one input slot's local."""

    step: int | None  # backward step index, None for nodes backward never visits
    node: str
    what: str  # one of _WHAT
    slot: int | None = None
    input: str | None = None

    def get(self, trace: Trace) -> Any:
        if self.what == "value":
            return _node_or_none(trace, self.node, "value")
        if self.what == "gradient":
            return _node_or_none(trace, self.node, "grad")
        step = _step_of(trace, self.node)
        if step is None:
            return None
        if self.what == "upstream":
            return step.upstream
        if self.slot is None or self.slot >= len(step.edges):
            return None
        return getattr(step.edges[self.slot], self.what)


def _node_or_none(trace: Trace, node: str, attr: str) -> Any:
    try:
        return getattr(trace.node(node), attr)
    except KeyError:
        return None


def _step_of(trace: Trace, node: str):
    cache = trace.__dict__.get("_testing_steps")
    if cache is None:
        cache = {s.node: s for s in trace.steps}
        object.__setattr__(trace, "_testing_steps", cache)
    return cache.get(node)


def _items(trace: Trace) -> list[_Item]:
    """Everything compared, in backward order: each visited node, then the nodes never visited."""
    items: list[_Item] = []
    for node in trace.backward_order():
        step = _step_of(trace, node)
        if step is None:
            items += [_Item(None, node, "value"), _Item(None, node, "gradient")]
            continue
        items += [_Item(step.index, node, w) for w in ("value", "gradient", "upstream")]
        for e in step.edges:
            items += [_Item(step.index, node, "local", e.slot, e.input),
                      _Item(step.index, node, "contribution", e.slot, e.input)]
    return items


def _numeric_local(trace: Trace, node_id: str, slot: int, h: float = 1e-6) -> float | None:
    """∂node/∂input[slot] by central differences of the op's forward (None outside its domain)."""
    from .ops import OPS

    node = trace.node(node_id)
    op = OPS.get(node.op)
    if op is None:
        return None
    args = [trace.node(i).value for i in node.inputs]
    step = h * max(1.0, abs(args[slot]))
    up, down = list(args), list(args)
    up[slot] += step
    down[slot] -= step
    try:
        return (op.forward(*up) - op.forward(*down)) / (2 * step)
    except (ArithmeticError, ValueError, TypeError):
        return None


def _numeric_source(trace: Trace, estimates: Mapping[str, float | None]) -> Callable[[_Item], Any]:
    """Finite differences as one more column: gradients of nodes, locals of edges, their products."""
    def get(item: _Item) -> Any:
        if item.what in ("gradient", "upstream"):
            return estimates.get(item.node)
        if item.what == "local":
            return _numeric_local(trace, item.node, item.slot)
        if item.what == "contribution":
            local, up = _numeric_local(trace, item.node, item.slot), estimates.get(item.node)
            return None if local is None or up is None else local * up
        return None  # finite differences have no opinion of their own on forward values
    return get


def _describe(item: _Item, trace: Trace) -> str:
    node = trace.node(item.node)
    head = f"node {item.node}" + (f" = {node.expr}" if node.expr and node.kind == "op" else "")
    if item.slot is None:
        return f"{head}: its {item.what}"
    quantity = f"local derivative ∂{item.node}/∂{item.input}" if item.what == "local" else \
        f"contribution (upstream × ∂{item.node}/∂{item.input})"
    return f"{head}, input slot {item.slot} ({item.input}): {quantity}"


def _neighbourhood(items: list[_Item], k: int, sources: Mapping[str, Callable[[_Item], Any]],
                   expected: Mapping[str, Any] | None = None) -> str:
    """The compared quantities of the steps around item k, one row each, the culprit marked."""
    target = items[k]
    if target.step is None:
        near = list(range(max(0, k - 4), min(len(items), k + 5)))
    else:
        near = [i for i, it in enumerate(items)
                if it.step is not None and abs(it.step - target.step) <= 1]
    rows = []
    for i in near:
        it = items[i]
        if it.what == "upstream" and i != k:
            continue  # the same number as the node's gradient row
        vals = [_show(get(it)) for get in sources.values()]
        if expected is not None:
            vals.append(_show(expected[it.node]) if it.what == "gradient" and it.node in expected
                        else "")
        rows.append(["→" if i == k else "", "" if it.step is None else str(it.step + 1), it.node,
                     it.what, "" if it.slot is None else f"{it.slot} ({it.input})", *vals])
    return _table(["", "step", "node", "quantity", "slot", *sources,
                   *(["expected"] if expected is not None else [])], rows)


def _first_difference(base: Trace, graph: Graph, values: Mapping[str, float],
                      traces: Mapping[str, Trace], numeric: bool, rtol: float,
                      atol: float) -> _Item | None:
    """The earliest disagreement in backward order among every engine's verdict on `base`."""
    from .compare import compare
    from .numeric import numeric_check

    verdicts = [compare(base, t, (base.engine, name), rtol, atol)
                for name, t in traces.items() if t is not base]
    if numeric:
        verdicts.append(numeric_check(graph, values, base, rtol=rtol, atol=atol))
    firsts = [v.first for v in verdicts if not v.agree and v.first is not None]
    if not firsts:
        return None
    order = {n: i for i, n in enumerate(base.backward_order())}
    d = min(firsts, key=lambda d: (order.get(d.node, len(order)),
                                   _WHAT.index(d.what) if d.what in _WHAT else -1,
                                   -1 if d.slot is None else d.slot))
    step = _step_of(base, d.node)
    if d.what in ("local", "contribution") and step is not None:
        return _Item(step.index, d.node, d.what, d.slot, step.edges[d.slot].input)
    if d.what == "gradient":
        # A node's gradient is the sum of what its consumers sent: name the edge whose local
        # derivative finite differences contradict, when there is one.
        for consumer, edge in base.consumers(d.node):
            local = _numeric_local(base, consumer.node, edge.slot)
            if local is not None and edge.local is not None and not _close(edge.local, local,
                                                                           rtol, atol):
                return _Item(consumer.index, consumer.node, "local", edge.slot, edge.input)
    what = d.what if d.what in _WHAT else "value"
    return _Item(None if step is None else step.index, d.node, what)


def assert_grads(f: Callable[..., Any] | str, inputs: Mapping[str, float] | Sequence[float],
                 expected: Mapping[str, float] | None = None,
                 engines: Sequence[str] = ENGINES, rtol: float = 1e-5,
                 atol: float = 1e-6) -> dict[str, Trace]:
    """Run `f` on each engine and assert they agree node by node (values, gradients, locals).

    `f` is a formula or a Python function of numbers written with operators and `backtrace.math`.
    `engines` are "reference", "torch" and "numeric" (central differences). `expected` maps node
    names (inputs or named intermediates) to hand-derived gradients. On a mismatch the
    AssertionError names the first divergent node in backward order, the input slot, every
    engine's number and a table of the neighbourhood. Returns each engine's Trace."""
    engines = tuple(engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise UsageError(f"unknown engine {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(ENGINES)}")
    values = _inputs(f, inputs)
    graph = _graph_for(f, values)
    traces = {e: _record(_run_engine(e, graph, values)) for e in engines if e != "numeric"}
    base = next(iter(traces.values())) if traces else _run_engine("reference", graph, values)
    sources: dict[str, Callable[[_Item], Any]] = {
        name: (lambda item, t=t: item.get(t)) for name, t in traces.items()}
    if "numeric" in engines:
        from .numeric import numeric_grads
        sources["numeric"] = _numeric_source(base, numeric_grads(graph, values, base))
    items = _items(base)
    first = _first_difference(base, graph, values, traces, "numeric" in engines, rtol, atol) \
        if len(sources) > 1 else None
    if first is not None:
        k = items.index(first)
        numbers = ", ".join(f"{name} {_show(get(first))}" for name, get in sources.items())
        raise AssertionError(
            f"engines disagree at {_describe(first, base)}: {numbers} "
            f"(first divergence in backward order; rtol={rtol:g}, atol={atol:g})\n"
            + _neighbourhood(items, k, sources))
    if expected:
        known = {node.id for node in base.nodes}
        missing = [n for n in expected if n not in known]
        if missing:
            raise UsageError(f"expected names no node {', '.join(map(repr, missing))} "
                             f"(nodes: {', '.join(n.id for n in base.nodes)})")
        for k, item in enumerate(items):
            if item.what != "gradient" or item.node not in expected:
                continue
            want = expected[item.node]
            got = {name: get(item) for name, get in sources.items()}
            if all(_close(0.0 if v is None else v, want, rtol, atol) for v in got.values()):
                continue
            numbers = ", ".join(f"{name} {_show(v)}" for name, v in got.items())
            raise AssertionError(
                f"gradient of {item.node} is not the expected (hand-derived) value: expected "
                f"{_show(want)}, {numbers} (rtol={rtol:g}, atol={atol:g})\n"
                + _neighbourhood(items, k, sources, expected))
    return traces


# ---------------------------------------------------------------- check_function

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

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def table(self, around: SlotCheck | None = None) -> str:
        """The rows as a plain table; with `around`, only the nodes next to that row."""
        rows = self.rows
        if around is not None:
            rows = [r for r in rows if abs(r.order - around.order) <= 1]
        return _table(["", "#", "node", "call", "slot", "input", "backward", "numeric", "max |Δ|"],
                      [["→" if r is around else ("✗" if not r.ok else "✓"), str(r.order + 1),
                        r.node, r.call, str(r.slot), r.input, r.error or _show(r.backward),
                        _show(r.numeric), format_number(r.max_delta)] for r in rows])


def check_function(fn: Any, *example_inputs: Any, rtol: float = 1e-3, atol: float = 1e-5,
                   eps: float = 1e-6, seed: int = 0, max_elements: int = 256) -> FunctionCheck:
    """Check the backward of every autograd node `fn` creates against finite differences.

    `fn` is a custom `torch.autograd.Function` class, a function of tensors or an `nn.Module`.
    Each node found in the forward pass is re-run alone in float64 on the same inputs; its
    backward's vector-Jacobian product for a random upstream gradient is compared with central
    differences of its forward, input slot by input slot. Raises AssertionError naming the first
    wrong node in backward order; returns the table of every check otherwise."""
    import torch

    call, label, params = _callable(fn)
    inputs = [_as_float64_leaf(x) for x in example_inputs]
    names = {id(t): n for t, n in zip(inputs, params) if isinstance(t, torch.Tensor)}
    if isinstance(call, torch.nn.Module):
        names.update((id(p), n) for n, p in call.named_parameters())
    with _Recorder() as recorder:
        out = call(*inputs)
    if not any(isinstance(t, torch.Tensor) and t.grad_fn is not None for t in _flat(out)):
        raise UsageError(f"{label}'s output does not depend on any floating-point input, "
                         "so there is no backward to check")
    calls = [c for c in recorder.calls if c.differentiable()]
    if not calls:
        raise UsageError(f"no autograd node of {label} could be re-run on its own")
    _name_nodes(calls, names)
    generator = torch.Generator().manual_seed(seed)
    result = FunctionCheck()
    for order, c in enumerate(reversed(calls)):
        result.rows += c.check(order, names, generator, rtol, atol, eps, max_elements)
    bad = next((r for r in result.rows if not r.ok), None)
    if bad is not None:
        if bad.error:
            what = f"its backward raised {bad.error}"
        else:
            numeric, backward, at = bad.numeric, bad.backward, ""
            if bad.where is not None and hasattr(numeric, "shape") and numeric.numel() > 4:
                # A big tensor: the numbers of its worst element say more than two norms.
                numeric, backward = numeric[bad.where], backward[bad.where]
                at = f"at element {list(bad.where)}: "
            elif bad.where is not None:
                at = f"worst at element {list(bad.where)}: "
            what = (f"{at}numeric {_show(numeric)}, backward {_show(backward)} "
                    f"(upstream gradient {bad.upstream}; max |Δ| = {format_number(bad.max_delta)})")
        raise AssertionError(
            f"backward of {bad.node} ({bad.call}) is wrong at input slot {bad.slot} ({bad.input}): "
            f"{what}; first wrong node in backward order (rtol={rtol:g}, atol={atol:g})\n"
            + result.table(around=bad))
    return result


def _callable(fn: Any) -> tuple[Callable[..., Any], str, list[str]]:
    """The thing to call, its name for messages, and its parameter names for the inputs."""
    import copy

    import torch

    if isinstance(fn, type) and issubclass(fn, torch.autograd.Function):
        params = _parameters(fn.forward)[1:]  # drop ctx
        # Looked up at call time, so the recorder's wrapped apply sees the call.
        return (lambda *args: fn.apply(*args)), f"{fn.__name__}.apply", list(params)
    if isinstance(fn, torch.nn.Module):
        module = copy.deepcopy(fn).double()  # finite differences need float64 parameters
        params = _parameters(module.forward)
        return module, type(fn).__name__, list(params)
    if callable(fn):
        try:
            params = list(_parameters(fn))
        except UsageError:
            params = []
        return fn, getattr(fn, "__name__", "fn"), params
    raise UsageError(f"check_function needs a function, an nn.Module or an autograd.Function, "
                     f"not {type(fn).__name__}")


def _as_float64_leaf(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().to(torch.float64).clone().requires_grad_(True)
    return x


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [y for item in x for y in _flat(item)]
    if isinstance(x, dict):
        return [y for item in x.values() for y in _flat(item)]
    return [x]


def _is_diff(t: Any) -> bool:
    import torch
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad


@dataclass
class _Call:
    """One recorded forward call: a torch function or a custom Function's apply."""

    func: Callable[..., Any]
    label: str
    args: tuple
    kwargs: dict
    out: Any
    node: str = ""

    def slots(self) -> list[tuple[int | str, Any]]:
        """(slot, tensor) for each differentiable tensor argument, nested lists flattened."""
        found: list[tuple[int | str, Any]] = []
        for i, a in enumerate(self.args):
            if isinstance(a, (list, tuple)):
                found += [(f"{i}[{j}]", t) for j, t in enumerate(a) if _is_diff(t)]
            elif _is_diff(a):
                found.append((i, a))
        found += [(k, v) for k, v in self.kwargs.items() if _is_diff(v)]
        return found

    def differentiable(self) -> bool:
        name = getattr(self.func, "__name__", "")
        in_place = name.endswith("_") and not name.startswith("__") or \
            name.startswith("__i") and name not in ("__index__", "__invert__")
        return not in_place and name not in ("__setitem__", "__get__") and bool(self.slots()) \
            and any(_is_diff(t) and t.grad_fn is not None for t in _flat(self.out))

    def _rerun(self, replace: dict[int | str, Any]) -> list[Any]:
        """The call again with some slots' tensors replaced (by slot, so x*x has two); its
        floating-point outputs."""
        args = []
        for i, a in enumerate(self.args):
            if isinstance(a, (list, tuple)):
                a = type(a)(replace.get(f"{i}[{j}]", x) for j, x in enumerate(a))
            args.append(replace.get(i, a))
        kwargs = {k: replace.get(k, v) for k, v in self.kwargs.items()}
        out = self.func(*args, **kwargs)
        return [t for t in _flat(out) if hasattr(t, "is_floating_point") and t.is_floating_point()]

    def check(self, order: int, names: dict[int, str], generator: Any, rtol: float, atol: float,
              eps: float, max_elements: int) -> list[SlotCheck]:
        import torch

        from .compare import close

        slots = self.slots()
        fresh = {slot: t.detach().clone().requires_grad_(True) for slot, t in slots}
        rows: list[SlotCheck] = []
        args_text = ", ".join(names.get(id(a), "…") if hasattr(a, "shape") else repr(a)
                              for a in self.args)
        call = f"{self.label}({args_text})"

        def row(slot, t, backward, numeric, delta, where, ok, error=""):
            rows.append(SlotCheck(order, self.node, call, slot, names.get(id(t), "?"), backward,
                                  numeric, delta, where, ok, error, upstream))

        with torch.enable_grad():
            outs = self._rerun(fresh)
        outs = [o for o in outs if o.requires_grad]
        ups = [torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o.device)
               for o in outs]
        # A random upstream gradient, so a backward that forgets to multiply by it is caught too.
        upstream = _show(ups[0]) if len(ups) == 1 and ups[0].numel() == 1 else "random"
        leaves = list(fresh.values())
        try:
            analytic = torch.autograd.grad(outs, leaves, ups, allow_unused=True)
        except Exception as exc:  # a user's backward may raise anything; report where
            for slot, t in slots:
                row(slot, t, None, None, math.inf, None, False, f"{type(exc).__name__}: {exc}")
            return rows

        def projected(replace: dict[int, Any]) -> float:
            with torch.no_grad():
                got = self._rerun(replace)
            return float(sum((u * o.to(torch.float64)).sum() for u, o in zip(ups, got)))

        for (slot, t), leaf, g in zip(slots, leaves, analytic):
            g = torch.zeros_like(leaf) if g is None else g.detach()
            base = leaf.detach()
            if base.numel() <= max_elements:
                numeric = torch.zeros_like(base)
                for i in range(base.numel()):  # one central difference per element
                    e = torch.zeros_like(base)
                    e.view(-1)[i] = eps
                    numeric.view(-1)[i] = (projected({slot: base + e})
                                           - projected({slot: base - e})) / (2 * eps)
                diff = (g - numeric).abs()
                ok = close(g, numeric, rtol, atol)
                where = None
                if base.dim() and diff.numel():
                    worst = torch.tensor(int(diff.view(-1).argmax()))
                    where = tuple(int(k) for k in torch.unravel_index(worst, base.shape))
                row(slot, t, g, numeric, float(diff.max()) if diff.numel() else 0.0, where, ok)
            else:
                # Too many elements for one difference each: compare along a random direction.
                u = torch.randn(base.shape, generator=generator, dtype=torch.float64)
                u = u.to(base.device)
                numeric = (projected({slot: base + eps * u})
                           - projected({slot: base - eps * u})) / (2 * eps)
                backward = float((g * u).sum())
                delta = abs(backward - numeric)
                row(slot, t, backward, numeric, delta, None, close(backward, numeric, rtol, atol))
        return rows


def _name_nodes(calls: list[_Call], names: dict[int, str]) -> None:
    """Name each call by its autograd node (MulBackward0, MulBackward0.1, ...) and its outputs."""
    seen: dict[str, int] = {}
    for c in calls:
        first = next(t for t in _flat(c.out) if _is_diff(t) and t.grad_fn is not None)
        base = type(first.grad_fn).__name__
        k = seen.get(base, 0)
        seen[base] = k + 1
        c.node = base if k == 0 else f"{base}.{k}"
        outs = [t for t in _flat(c.out) if hasattr(t, "shape")]
        for j, t in enumerate(outs):
            names.setdefault(id(t), c.node if len(outs) == 1 else f"{c.node}[{j}]")


class _Recorder:
    """Records top-level torch calls (a TorchFunctionMode) and custom Function applies."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self._depth = 0  # > 0 inside a custom Function's forward, whose ops are its own business

    def __enter__(self) -> _Recorder:
        import torch
        from torch.overrides import TorchFunctionMode

        recorder = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                if recorder._depth == 0:
                    recorder.calls.append(_Call(func, _func_label(func), tuple(args), dict(kwargs),
                                                out))
                return out

        Function = torch.autograd.Function
        self._original = Function.__dict__["apply"]
        original = self._original.__func__

        def apply(cls, *args, **kwargs):
            recorder._depth += 1
            try:
                out = original(cls, *args, **kwargs)
            finally:
                recorder._depth -= 1
            if recorder._depth == 0:
                recorder.calls.append(_Call(cls.apply, f"{cls.__name__}.apply", args, kwargs, out))
            return out

        # Custom Functions do not pass through TorchFunctionMode; their apply is wrapped while
        # recording only, and restored even when the forward raises.
        Function.apply = classmethod(apply)
        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch
        try:
            self._mode.__exit__(*exc)
        finally:
            torch.autograd.Function.apply = self._original


def _func_label(func: Any) -> str:
    name = getattr(func, "__name__", repr(func))
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    if owner is not None and hasattr(owner, "__name__") and owner.__name__ != "torch":
        return f"{owner.__name__.replace('TensorBase', 'Tensor')}.{name}"
    module = getattr(func, "__module__", "") or ""
    if module.startswith("torch.nn.functional"):
        return f"F.{name}"
    return f"torch.{name}" if module.startswith("torch") else name


# ---------------------------------------------------------------- golden traces

def assert_trace_matches(trace: Trace, path: str | os.PathLike, rtol: float = 1e-6,
                         atol: float = 1e-9) -> None:
    """Compare `trace` with the golden JSON at `path`: structure exact, numbers within tolerance.

    With ``pytest --backtrace-update`` (or BACKTRACE_UPDATE=1) the golden is (re)written instead."""
    from .files import write_atomic

    target = Path(path)
    if update_goldens or os.environ.get("BACKTRACE_UPDATE") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, trace.to_json() + "\n")
        return
    if not target.exists():
        raise AssertionError(f"no golden trace at {target}: run pytest --backtrace-update to create it")
    try:
        golden = json.loads(target.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"golden trace {target} is not JSON: {exc}") from None
    Trace.from_dict(golden)  # a clear error for a malformed or newer-schema golden
    actual = json.loads(trace.to_json())
    problem = _diff_traces(actual, golden, rtol, atol)
    if problem is not None:
        where, message = problem
        raise AssertionError(f"trace differs from golden {target} at {_where(where, golden)}: "
                             f"{message} (rtol={rtol:g}, atol={atol:g}); "
                             f"rerun with pytest --backtrace-update if the change is intended")


def _diff_traces(a: dict, b: dict, rtol: float, atol: float) -> tuple[str, str] | None:
    """Compare two trace dicts in the order a reader would look: structure, forward values in
    topological order, backward steps in execution order, then gradients and the rest."""
    numbers = ("value", "grad", "meta")
    later = ("nodes", "steps", "value", "grads", "meta")
    parts: list[tuple[str, Any, Any]] = [("", _without(a, later), _without(b, later))]
    for key in ("nodes", "steps"):
        if len(a[key]) != len(b[key]):
            return f"/{key}", f"{len(a[key])} {key}, golden has {len(b[key])}"
    parts += [(f"/nodes/{i}", _without(x, numbers), _without(y, numbers))
              for i, (x, y) in enumerate(zip(a["nodes"], b["nodes"]))]
    parts += [(f"/steps/{i}", _step_shape(x), _step_shape(y))
              for i, (x, y) in enumerate(zip(a["steps"], b["steps"]))]
    parts += [(f"/nodes/{i}/value", x.get("value"), y.get("value"))
              for i, (x, y) in enumerate(zip(a["nodes"], b["nodes"]))]
    parts += [(f"/steps/{i}", x, y) for i, (x, y) in enumerate(zip(a["steps"], b["steps"]))]
    parts += [(f"/nodes/{i}", x, y) for i, (x, y) in reversed(list(enumerate(zip(a["nodes"],
                                                                                 b["nodes"]))))]
    parts += [(f"/{k}", a.get(k), b.get(k)) for k in ("value", "grads", "meta")]
    for where, x, y in parts:
        found = _diff(x, y, where, rtol, atol)
        if found:
            return found
    return None


def _without(d: Any, keys: tuple[str, ...]) -> Any:
    return {k: v for k, v in d.items() if k not in keys} if isinstance(d, dict) else d


def _step_shape(step: Any) -> Any:
    """A step without its numbers: which node, which edges, which rules."""
    if not isinstance(step, dict):
        return step
    edges = [_without(e, ("local", "contribution")) for e in step.get("edges", [])]
    return {**_without(step, ("upstream", "meta", "edges")), "edges": edges}




def _diff(a: Any, b: Any, where: str, rtol: float, atol: float) -> tuple[str, str] | None:
    """The first place where a (actual) and b (golden) differ: path and message, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            extra, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            return where, f"keys differ (new: {extra}, missing: {missing})"
        for k in a:
            found = _diff(a[k], b[k], f"{where}/{k}", rtol, atol)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return where, f"{len(a)} items, golden has {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _diff(x, y, f"{where}/{i}", rtol, atol)
            if found:
                return found
        return None
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        if isinstance(a, int) and isinstance(b, int):
            same = a == b
        else:
            from .compare import close

            same = close(float(a), float(b), rtol, atol)
        return None if same else (where, f"{format_number(a)} != golden {format_number(b)}")
    if a != b or type(a) is not type(b):
        return where, f"{a!r} != golden {b!r}"
    return None


def _where(path: str, golden: dict) -> str:
    """'/steps/0/edges/1/local' as 'step 1 (node f), input slot 1 (z), local'."""
    parts = [p for p in path.strip("/").split("/") if p not in ("dict", "list", "")]
    label = ""
    if len(parts) >= 2 and parts[0] in ("nodes", "steps") and parts[1].isdigit():
        entry = golden[parts[0]][int(parts[1])]
        if parts[0] == "nodes":
            label = f"node {entry.get('id')}"
        else:
            label = f"step {int(parts[1]) + 1} (node {entry.get('node')})"
        parts = parts[2:]
        if len(parts) >= 2 and parts[0] == "edges" and parts[1].isdigit():
            edge = entry["edges"][int(parts[1])]
            label += f", input slot {edge.get('slot')} ({edge.get('input')})"
            parts = parts[2:]
    elif parts and parts[0] in ("nodes", "steps"):
        return f"the list of {parts[0]}"
    rest = "/".join(parts)
    return ", ".join(x for x in (label, rest) if x) or "the top level"
