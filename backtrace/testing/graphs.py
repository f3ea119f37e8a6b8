"""Python functions as graphs: run once on `backtrace.Value` inputs, their nodes named after the
function's local variables; the engines that run such a graph; `explain_function`."""
from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import UsageError
from ..ir import CONST, INPUT, Graph
from ..traces import Trace
from .settings import recorded


def function_graph(f: Callable[..., Any] | str, **values: float) -> Graph:
    """The graph of a formula, or of a Python function run once on `backtrace.Value` inputs.

    Intermediate values are named after the function's local variables (``q = x + y`` names the
    node ``q``); the output is named after the returned variable, else ``f``. The function runs at
    `values` (0.5 for inputs not given): the graph does not depend on them, the domain does."""
    from ..parser import parse
    if isinstance(f, str):
        return parse(f)
    names = parameters(f)
    return _function_graph(f, names, {n: values.get(n, 0.5) for n in names})


def parameters(f: Callable[..., Any]) -> tuple[str, ...]:
    """The names f's inputs can be given by (positional or keyword parameters)."""
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        raise UsageError(f"cannot read the parameters of {f!r}; pass the input names") from None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                     p.KEYWORD_ONLY))


def _function_graph(f: Callable[..., Any], names: tuple[str, ...],
                    values: Mapping[str, float]) -> Graph:
    from ..value import Value, to_graph

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
    from ..value import Value

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

def input_values(f: Callable[..., Any] | str,
                 inputs: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """The inputs by name: a dict as given, a sequence matched to f's parameters."""
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if isinstance(f, str):
        raise UsageError("give a formula's inputs as a dict name -> value")
    return dict(zip(parameters(f), inputs, strict=True))


def graph_for(f: Callable[..., Any] | str, values: Mapping[str, float]) -> Graph:
    """The graph of a formula, or of a function run at `values`."""
    from ..parser import parse
    if isinstance(f, str):
        return parse(f)
    return _function_graph(f, parameters(f), values)


def run_engine(engine: str, graph: Graph, values: Mapping[str, float]) -> Trace:
    """One engine's Trace of a graph (both engines use the graph's node ids)."""
    if engine == "reference":
        from ..engine import run
        return run(graph, values)
    if engine == "torch":
        from ..torch_engine import run as run_torch
        return run_torch(graph, values)
    raise UsageError(f"unknown engine {engine!r}; choose from reference, torch")


def explain_function(f: Callable[..., Any] | str, engine: str = "reference",
                     **values: float) -> Trace:
    """The Trace of a Python function (or formula) at the given input values.

    `engine="reference"` runs it on `backtrace.Value`; `engine="torch"` calls the same function on
    float64 torch tensors inside `backtrace.trace` and returns the recorded backward pass."""
    if engine == "torch" and not isinstance(f, str):
        return recorded(_explain_on_torch(f, values))
    return recorded(run_engine(engine, graph_for(f, values), values))


def _explain_on_torch(f: Callable[..., Any], values: Mapping[str, float]) -> Trace:
    import torch

    from ..tracer import trace as tracer

    leaves = {n: torch.tensor(float(v), dtype=torch.float64, requires_grad=True)
              for n, v in values.items()}
    with tracer(names=leaves, level="full") as t:
        out = f(**leaves)
        if not isinstance(out, torch.Tensor) or out.grad_fn is None:
            raise UsageError(f"{getattr(f, '__name__', 'f')} does not depend on its inputs on torch")
        out.backward()
    return t.trace
