"""The page data of the explorer: one JSON-ready dict holding the whole (unfolded) trace, its module
tree with the gradient norms at each module's boundary, and what the page draws with.

The browser folds and unfolds modules itself, so the data is the trace as recorded (less the node
kinds `hide` leaves out), not a folded picture. Every value travels as its text (`describe`) and
its numbers (`TensorStats.NUMBERS`), so the page never formats a number on its own.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from ..errors import LimitError
from ..fold import DEFAULT_BUDGET, VisibleGraph, boundary_norms, layout, \
    path_depth, visible_graph
from ..ops import OPS
from ..traces import Trace, TraceNode
from ..values import TensorStats, describe, is_tensor, norm, shape_text
from .frames import Frame, replay_caption
from .labels import (ACTIVE_FILL, DECADES, GRAD_COLOUR, KIND_FILL, NORM_PALETTE, PENDING_COLOUR,
                     decade_labels, grad_cell, op_symbol)
from .options import Options

SCHEMA = "backtrace.explorer/1"
OPEN_TARGET = 40  # the page opens at the deepest folding that shows at most this many boxes
LISTED = 16  # tensors of at most this many elements (tracer level "full") show every element


def number(x: float | None) -> float | str | None:
    """A float as JSON: non-finite ones as the strings JavaScript's Number() reads back."""
    if x is None or math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def value_data(v: Any) -> dict | None:
    """A recorded value as the page shows it: its text, its norm and, for tensors, its shape,
    dtype and every statistic of TensorStats."""
    if v is None:
        return None
    if isinstance(v, (tuple, list)):  # one value per output slot (split, chunk)
        return {"text": describe(v, slots=True), "norm": number(norm(v)),
                "parts": [value_data(x) for x in v]}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return {"text": describe(v), "norm": number(norm(v)), "num": number(float(v))}
    stats = v if isinstance(v, TensorStats) else _tensor_stats(v) if is_tensor(v) else None
    if stats is None:
        return {"text": str(v)}
    data = {"text": describe(v), "shapeText": shape_text(stats.shape), "dtype": stats.dtype,
            **{k: number(_digits(x)) for k, x in zip(stats.NUMBERS, stats.numbers())}}
    if is_tensor(v) and 1 < v.numel() <= LISTED:
        data["items"] = describe(v, listed=LISTED)
    return data


def _digits(x: float | None) -> float | None:
    """A statistic to 9 significant digits: all a float32 holds, and a smaller page."""
    return x if x is None or not math.isfinite(x) else float(f"{x:.9g}")


def _tensor_stats(t: Any) -> TensorStats:
    from ..tracer.stats import tensor_stats  # a tensor value means torch is already loaded

    return tensor_stats(t)


def _labels(n: TraceNode, formula: bool) -> tuple[str, str]:
    """(bold title, small tag at its right): formulas show the id and the op's symbol (f, *),
    tensor graphs the op and the id (mm, %4), named nodes their name."""
    name = str(n.meta.get("name") or "")
    if n.kind in ("input", "const"):
        return name or n.id, ""
    if formula:
        return name or n.id, op_symbol(n)
    return (name, n.op) if name else (n.op, n.id)


def _saved(saved: Any) -> dict[str, str]:
    """What a node saved for backward, {name: description}; when the tracer could not read it
    (a custom Function's ctx, checkpointing) its note, under no name."""
    if isinstance(saved, dict):
        return {str(k): str(v) for k, v in saved.items()}
    return {"": str(saved)} if saved else {}


def _node(g: VisibleGraph, n: TraceNode, into: dict[str, list], formula: bool) -> dict:
    label, tag = _labels(n, formula)
    contributions = [e.contribution for e in into.get(n.id, ())]
    expr = n.expr if formula and n.op in OPS and n.kind == "op" and n.expr != n.id else ""
    saved = _saved(n.meta.get("saved"))
    grad, grad_text = value_data(n.grad), grad_cell(n, contributions).text
    found = {"id": n.id, "label": label if label != n.id else "", "tag": tag, "op": n.op,
             "kind": n.kind, "module": n.module, "expr": expr,
             "type": str(n.meta.get("torch_type") or ""), "inputs": list(g.inputs[n.id]),
             "value": value_data(n.value), "grad": grad, "saved": saved,
             "gradText": "" if grad and grad_text == grad["text"] else grad_text}
    # Empty fields stay out (model.js fills them in): big traces make big pages.
    return {k: v for k, v in found.items() if v or k in ("id", "op", "kind")}


def _steps(trace: Trace, g: VisibleGraph) -> list[dict]:
    """The backward steps in execution order, each edge with its texts and numbers; edges into
    hidden nodes are left out, as the picture leaves them out."""
    steps = []
    for k, s in enumerate(trace.steps):
        if s.node not in g.by_id:
            continue
        edges = [{"input": e.input, "slot": e.slot, "rule": e.rule, "note": e.note,
                  "local": value_data(e.local), "contribution": value_data(e.contribution)}
                 for e in s.edges if e.input in g.by_id]
        caption = replay_caption(trace, Frame(k + 1, s.node))
        steps.append({"node": s.node, "upstream": value_data(s.upstream), "edges": edges,
                      "caption": caption})
    return steps


def _modules(g: VisibleGraph) -> list[dict]:
    """Every module path (ancestors included), shallow first, with its size, its parameters and the
    gradient norms at its boundary (what flows in from outside and out to its consumers)."""
    members: dict[str, list[str]] = defaultdict(list)
    for n in g.nodes:
        comps = n.module.split(".") if n.module else []
        for k in range(1, len(comps) + 1):
            members[".".join(comps[:k])].append(n.id)
    found = []
    for path in sorted(members, key=lambda p: (path_depth(p), p)):
        ids = members[path]
        grad_in, grad_out, outs = boundary_norms(g, ids)
        params = [i for i in ids if g.by_id[i].kind == "input" and g.by_id[i].meta.get("name")]
        found.append({"path": path, "nodes": len(ids), "params": params, "outputs": outs,
                      "gradIn": value_data(grad_in), "gradOut": value_data(grad_out)})
    return found


def initial_depth(g: VisibleGraph, depth: int | None, target: int = OPEN_TARGET,
                  budget: int = DEFAULT_BUDGET) -> int:
    """The module depth the page opens folded at: `depth` when given, else the deepest that shows
    at most `target` boxes (every instance of a repeated block drawn: unfolding one is a click);
    past `budget` boxes it is refused, as a picture would be."""
    max_depth = max((path_depth(n.module) for n in g.nodes), default=0)
    if depth is None:
        depth = max_depth + 1  # folds nothing
        while depth > 1 and len(layout(g, depth, []).order) > target:
            depth -= 1
    depth = min(depth, max_depth + 1)
    shown = len(layout(g, depth, []).order)
    if shown > budget:
        raise LimitError(f"the explorer would open with {shown:,} boxes, over the budget of "
                         f"{budget:,}: fold it (--depth), hide nodes (--hide) or raise --budget")
    return depth


def style_data() -> dict:
    """The colours of the static pictures, so the page and the SVGs read the same."""
    return {"palette": list(NORM_PALETTE), "kindFill": dict(KIND_FILL), "grad": GRAD_COLOUR,
            "pending": PENDING_COLOUR, "active": ACTIVE_FILL,
            # one colour per decade, the same fixed scale as the pictures (labels.norm_colour)
            "decades": {"first": DECADES[0], "labels": decade_labels()}}


def page_data(trace: Trace, opts: Options) -> dict:
    """Everything the explorer page shows, as one JSON-ready dict (schema backtrace.explorer/1)."""
    g = visible_graph(trace, opts.hide)
    into: dict[str, list] = defaultdict(list)
    for s in trace.steps:
        for e in s.edges:
            into[e.input].append(e)
    scalar = trace.scalar
    colour = opts.colour or ("kind" if scalar else "grad")
    budget = DEFAULT_BUDGET if opts.budget is None else opts.budget
    return {
        "schema": SCHEMA,
        "title": str(trace.meta.get("formula") or trace.meta.get("model")
                     or f"{trace.engine} trace of {trace.output}"),
        "engine": trace.engine, "scalar": scalar, "output": trace.output,
        "mode": opts.mode, "colour": colour, "depth": initial_depth(g, opts.depth, budget=budget),
        "style": style_data(),
        "seedCaption": replay_caption(trace, Frame(0, None)),
        "nodes": [_node(g, n, into, scalar) for n in g.nodes],
        "steps": _steps(trace, g), "modules": _modules(g),
        "hidden": len(trace.nodes) - len(g.nodes),
    }
