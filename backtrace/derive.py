"""Chain-rule derivations read off a Trace: ∂f/∂x as a sum over paths of products of local derivatives."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .traces import Trace


@dataclass(frozen=True)
class Factor:
    """One local derivative on a path: ∂node/∂input (slot), its rule text and its value."""

    node: str
    input: str
    slot: int
    rule: str
    local: Any
    repeated: bool  # the node uses this input in several slots (x*x): name the slot


@dataclass(frozen=True)
class Derivation:
    """∂output/∂input as the sum over every path from the output down to the input."""

    output: str
    input: str
    grad: Any
    paths: tuple[tuple[Factor, ...], ...]  # the first `max_paths` paths, output side first
    total_paths: int


def derivations(trace: Trace, max_paths: int = 8) -> list[Derivation]:
    """One derivation per input of the trace (scalar traces: locals must be numbers)."""
    edges_of: dict[str, list[Factor]] = {}
    for step in trace.steps:
        inputs = [e.input for e in step.edges]
        edges_of[step.node] = [
            Factor(step.node, e.input, e.slot, e.rule, e.local, inputs.count(e.input) > 1)
            for e in step.edges if e.contribution is not None or e.note == "not recorded"]
    order = [n.id for n in trace.nodes]
    result = []
    for node in trace.nodes:
        if node.kind != "input":
            continue
        counts = _path_counts(order, edges_of, node.id)
        paths = _first_paths(trace.output, node.id, edges_of, counts, max_paths)
        result.append(Derivation(trace.output, node.id, node.grad, paths, counts.get(trace.output, 0)))
    return result


def _path_counts(order: list[str], edges_of: dict, target: str) -> dict[str, int]:
    """How many paths lead from each node down to target (dynamic programming, topological order)."""
    counts = {target: 1}
    for node in order:
        if node != target:
            total = sum(counts.get(f.input, 0) for f in edges_of.get(node, ()))
            if total:
                counts[node] = total
    return counts


def _first_paths(output: str, target: str, edges_of: dict, counts: dict, limit: int):
    """The first `limit` paths in slot order, by an explicit-stack walk that skips dead ends."""
    paths, stack = [], [(output, ())]
    while stack and len(paths) < limit:
        node, prefix = stack.pop()
        if node == target:
            paths.append(prefix)
            continue
        for f in reversed(edges_of.get(node, ())):
            if counts.get(f.input):
                stack.append((f.input, prefix + (f,)))
    return tuple(paths)


def product(path: tuple[Factor, ...]) -> Any:
    """The product of a path's local derivatives."""
    value = 1.0
    for f in path:
        if f.local is None:  # not computed or not recorded: the product is unknown
            return None
        value = value * f.local
    return value


@dataclass(frozen=True)
class TensorDerivation:
    """∂output/∂input of a tensor formula: the rule of each edge that sends the input gradient
    (one per consumer; the gradient is their sum), written over the upstream ∂L/∂node."""

    output: str
    input: str
    grad: Any
    terms: tuple[str, ...]
    notes: tuple[str, ...]  # why an edge sends nothing (class indices)


def tensor_derivations(trace: Trace) -> list[TensorDerivation]:
    """One derivation per input of a tensor trace, in the order of the inputs."""
    terms: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for step in trace.steps:
        for e in step.edges:
            if e.contribution is not None:
                terms.setdefault(e.input, []).append(e.rule)
            elif e.note:
                notes.setdefault(e.input, []).append(e.note)
    return [TensorDerivation(trace.output, n.id, n.grad, tuple(terms.get(n.id, ())),
                             tuple(dict.fromkeys(notes.get(n.id, ()))))
            for n in trace.nodes if n.kind == "input"]
