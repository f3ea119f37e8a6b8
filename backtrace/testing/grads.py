"""`assert_grads`: one function run on every engine, compared node by node in backward order; the
first difference is named, with a table of its neighbourhood."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..ir import Graph
from ..traces import Trace
from .graphs import graph_for, input_values, run_engine
from .settings import recorded
from .text import show, table

ENGINES = ("reference", "torch", "numeric")

_WHAT = ("value", "gradient", "upstream", "local", "contribution")

# Each column of the comparison: how one engine (or finite differences) answers for an item.
Source = Callable[["_Item"], Any]


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
    engines = _checked_engines(engines)
    values = input_values(f, inputs)
    graph = graph_for(f, values)
    traces = {e: recorded(run_engine(e, graph, values)) for e in engines if e != "numeric"}
    base = next(iter(traces.values())) if traces else run_engine("reference", graph, values)
    sources = _sources(traces, base, graph, values, "numeric" in engines)
    items = _items(base)
    if len(sources) > 1:
        first = _first_difference(base, graph, values, traces, "numeric" in engines, rtol, atol)
        if first is not None:
            _fail_at_divergence(first, base, items, sources, rtol, atol)
    if expected:
        _check_expected(expected, base, items, sources, rtol, atol)
    return traces


def _checked_engines(engines: Sequence[str]) -> tuple[str, ...]:
    engines = tuple(engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise UsageError(f"unknown engine {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(ENGINES)}")
    return engines


def _sources(traces: Mapping[str, Trace], base: Trace, graph: Graph, values: Mapping[str, float],
             numeric: bool) -> dict[str, Source]:
    """One column per engine run, and finite differences' column when asked for."""
    sources: dict[str, Source] = {name: (lambda item, t=t: item.get(t))
                                  for name, t in traces.items()}
    if numeric:
        from ..numeric import numeric_grads
        sources["numeric"] = _numeric_source(base, numeric_grads(graph, values, base))
    return sources


def _fail_at_divergence(first: _Item, base: Trace, items: list[_Item],
                        sources: Mapping[str, Source], rtol: float, atol: float) -> None:
    numbers = ", ".join(f"{name} {show(get(first))}" for name, get in sources.items())
    raise AssertionError(
        f"engines disagree at {_describe(first, base)}: {numbers} "
        f"(first divergence in backward order; rtol={rtol:g}, atol={atol:g})\n"
        + _neighbourhood(items, items.index(first), sources))


def _check_expected(expected: Mapping[str, float], base: Trace, items: list[_Item],
                    sources: Mapping[str, Source], rtol: float, atol: float) -> None:
    """Every engine's gradient of each named node against the hand-derived one, backward order."""
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
        numbers = ", ".join(f"{name} {show(v)}" for name, v in got.items())
        raise AssertionError(
            f"gradient of {item.node} is not the expected (hand-derived) value: expected "
            f"{show(want)}, {numbers} (rtol={rtol:g}, atol={atol:g})\n"
            + _neighbourhood(items, k, sources, expected))


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """backtrace's tolerance rule, where a missing value (None) is no opinion."""
    from ..compare import close

    return a is None or b is None or close(a, b, rtol, atol)


# ---------------------------------------------------------------- compared items

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


# ---------------------------------------------------------------- finite differences

def _numeric_local(trace: Trace, node_id: str, slot: int, h: float = 1e-6) -> float | None:
    """∂node/∂input[slot] by central differences of the op's forward (None outside its domain)."""
    from ..ops import OPS

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


def _numeric_source(trace: Trace, estimates: Mapping[str, float | None]) -> Source:
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


# ---------------------------------------------------------------- the first difference

def _first_difference(base: Trace, graph: Graph, values: Mapping[str, float],
                      traces: Mapping[str, Trace], numeric: bool, rtol: float,
                      atol: float) -> _Item | None:
    """The earliest disagreement in backward order among every engine's verdict on `base`."""
    from ..compare import compare
    from ..numeric import numeric_check

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
        culprit = _contradicted_edge(base, d.node, rtol, atol)
        if culprit is not None:
            return culprit
    what = d.what if d.what in _WHAT else "value"
    return _Item(None if step is None else step.index, d.node, what)


def _contradicted_edge(base: Trace, node: str, rtol: float, atol: float) -> _Item | None:
    # A node's gradient is the sum of what its consumers sent: name the edge whose local
    # derivative finite differences contradict, when there is one.
    for consumer, edge in base.consumers(node):
        local = _numeric_local(base, consumer.node, edge.slot)
        if local is not None and edge.local is not None and not _close(edge.local, local,
                                                                       rtol, atol):
            return _Item(consumer.index, consumer.node, "local", edge.slot, edge.input)
    return None


def _describe(item: _Item, trace: Trace) -> str:
    node = trace.node(item.node)
    head = f"node {item.node}" + (f" = {node.expr}" if node.expr and node.kind == "op" else "")
    if item.slot is None:
        return f"{head}: its {item.what}"
    quantity = f"local derivative ∂{item.node}/∂{item.input}" if item.what == "local" else \
        f"contribution (upstream × ∂{item.node}/∂{item.input})"
    return f"{head}, input slot {item.slot} ({item.input}): {quantity}"


def _neighbourhood(items: list[_Item], k: int, sources: Mapping[str, Source],
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
        vals = [show(get(it)) for get in sources.values()]
        if expected is not None:
            vals.append(show(expected[it.node]) if it.what == "gradient" and it.node in expected
                        else "")
        rows.append(["→" if i == k else "", "" if it.step is None else str(it.step + 1), it.node,
                     it.what, "" if it.slot is None else f"{it.slot} ({it.input})", *vals])
    return table(["", "step", "node", "quantity", "slot", *sources,
                  *(["expected"] if expected is not None else [])], rows)
