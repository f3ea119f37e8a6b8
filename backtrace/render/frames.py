"""The backward pass as the replay shows it: the wires of the graph, the state after each step,
and the sizes that keep every frame's layout the same (a cell whose text changes between frames
gets the width of its widest text, so dot places every node where it placed it in the others)."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..traces import Edge, Trace, TraceNode
from .labels import grad_cell, wire_back
from .metrics import text_width

GRAD_PT, WIRE_PT, CAPTION_PT = 11.0, 10.0, 11.0  # font sizes of the cells that change
PADDING = 6  # points around a cell's text: its padding on both sides and a little slack


@dataclass(frozen=True)
class Wire:
    """One input slot of a node drawn as a wire (x*x has two), with its backward edge if any."""

    node: TraceNode
    slot: int
    src: TraceNode
    edge: Edge | None
    upstream: Any  # the gradient that reached `node`


def wires(trace: Trace) -> Iterator[Wire]:
    """Every wire, node by node, slot by slot; the k-th wire from one input gets its k-th edge."""
    steps = {s.node: s for s in trace.steps}
    index = {n.id: n for n in trace.nodes}
    for node in trace.nodes:
        step = steps.get(node.id)
        by_input: dict[str, list[Edge]] = defaultdict(list)
        for e in step.edges if step is not None else ():
            by_input[e.input].append(e)
        seen: dict[str, int] = defaultdict(int)
        for slot, src in enumerate(node.inputs):
            if src not in index:
                continue
            edges, k = by_input.get(src, []), seen[src]
            seen[src] += 1
            yield Wire(node, slot, index[src], edges[k] if k < len(edges) else None,
                       step.upstream if step is not None else None)


@dataclass
class Frame:
    """The backward pass after `done` steps: which node is active and what each node has received."""

    done: int
    active: str | None
    received: dict[str, list[Any]] = field(default_factory=dict)


def consumer_edges(trace: Trace) -> dict[str, list[tuple[int, Edge]]]:
    """node id -> (step index, edge) for every backward edge sending gradient into it."""
    into: dict[str, list[tuple[int, Edge]]] = defaultdict(list)
    for k, step in enumerate(trace.steps):
        for e in step.edges:
            into[e.input].append((k, e))
    return into


def frame(trace: Trace, done: int) -> Frame:
    """The state after the first `done` backward steps (0: only the output's seed gradient 1)."""
    active = trace.steps[done - 1].node if done > 0 else None
    received: dict[str, list[Any]] = defaultdict(list)
    for step in trace.steps[:done]:
        for e in step.edges:
            received[e.input].append(e.contribution)
    return Frame(done, active, received)


def replay_caption(trace: Trace, state: Frame) -> str:
    """'step 2 of 5: %0 sends its gradient to x, y' for the legend of a replay frame."""
    total = len(trace.steps)
    if state.active is None:
        return f"step 0 of {total}: seed ∂{trace.output}/∂{trace.output} = 1"
    step = trace.steps[state.done - 1]
    targets = ", ".join(dict.fromkeys(e.input for e in step.edges if e.contribution is not None))
    return f"step {state.done} of {total}: {step.node} sends its gradient to {targets or 'nothing'}"


@dataclass(frozen=True)
class ReplaySizes:
    """Widths in points of the cells whose text changes between frames, at their widest."""

    grad: dict[str, int]  # node id -> its gradient cell
    wire: dict[tuple[str, int], int]  # (consumer id, input slot) -> the wire's backward line
    caption: int


def _width(texts, size: float) -> int:
    return math.ceil(max((text_width(t, size) for t in texts), default=0.0)) + PADDING


def replay_sizes(trace: Trace) -> ReplaySizes:
    """Every frame's changing texts, measured once for the whole replay."""
    into = consumer_edges(trace)
    grad = {}
    for n in trace.nodes:
        sent = [e.contribution for _, e in into.get(n.id, ())]
        texts = {grad_cell(n, sent[:k], complete=False).text for k in range(len(sent))}
        grad[n.id] = _width(texts | {grad_cell(n, sent).text}, GRAD_PT)
    tensors = not trace.scalar
    wire = {(w.node.id, w.slot): _width({wire_back(w.edge, w.upstream, tensors)[0], "pending"},
                                        WIRE_PT)
            for w in wires(trace) if w.edge is not None}
    captions = (replay_caption(trace, frame(trace, k)) for k in range(len(trace.steps) + 1))
    return ReplaySizes(grad, wire, _width(captions, CAPTION_PT))
