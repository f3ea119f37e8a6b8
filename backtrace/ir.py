"""The flat IR: frozen nodes in topological order, inputs as ordered tuples of node indices."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import LimitError, MissingValueError, UsageError
from .ops import CONSTANTS, OPS
from .values import format_number

INPUT, CONST = "input", "const"
DEFAULT_MAX_NODES = 1_000_000


@dataclass(frozen=True, slots=True)
class Node:
    """One node: an input variable, a constant, or an op applied to earlier nodes."""

    id: str  # the user's name, or %0, %1, ... in creation order
    op: str  # "input", "const" or a key of OPS
    inputs: tuple[int, ...] = ()  # ordered, so x*x has two edges to x
    value: float | None = None  # constants only
    named: bool = False  # True when the id is a name the user gave
    params: tuple[tuple[str, Any], ...] = ()  # an op's integer arguments: mean(x, 0) has (("dim", 0),)


@dataclass(frozen=True)
class Graph:
    """A whole formula: nodes in topological order and the index of the output node."""

    nodes: tuple[Node, ...]
    output: int
    source: str = ""
    aliases: tuple[tuple[str, int], ...] = field(default=())  # extra names, e.g. f = q

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input variables in order of first appearance."""
        return tuple(n.id for n in self.nodes if n.op == INPUT)

    def label(self, i: int) -> str:
        """How node i is written as an operand: its name, its constant, or its id."""
        node = self.nodes[i]
        if node.op == CONST and not node.named:
            return format_number(node.value)
        return node.id

    def expression(self, i: int) -> str:
        """Node i's own expression over its operands' labels, e.g. ``x + y``."""
        node = self.nodes[i]
        if node.op in (INPUT, CONST):
            return self.label(i)
        return OPS[node.op].expression(*(self.label(j) for j in node.inputs), params=node.params)


class GraphBuilder:
    """Appends nodes in topological order and hands out deterministic ids."""

    def __init__(self, max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self.nodes: list[Node] = []
        self.max_nodes = max_nodes
        self._anonymous = 0

    def add(self, op: str, inputs: tuple[int, ...] = (), value: float | None = None,
            name: str | None = None, params: tuple[tuple[str, Any], ...] = ()) -> int:
        """Append a node and return its index."""
        if len(self.nodes) >= self.max_nodes:
            raise LimitError(f"formula has more than {self.max_nodes:,} nodes (raise max_nodes)")
        if name is None:
            name, named = f"%{self._anonymous}", False
            self._anonymous += 1
        else:
            named = True
        self.nodes.append(Node(name, op, inputs, value, named, params))
        return len(self.nodes) - 1

    def pop(self) -> Node:
        """Take back the last node added (a call's integer argument is a parameter, not a node)."""
        node = self.nodes.pop()
        if not node.named:
            self._anonymous -= 1
        return node

    def rename(self, i: int, name: str) -> None:
        """Give an anonymous node the user's name (``q = x + y`` names the add node ``q``)."""
        node = self.nodes[i]
        self.nodes[i] = Node(name, node.op, node.inputs, node.value, True, node.params)

    def build(self, output: int, source: str = "", aliases: tuple = ()) -> Graph:
        """Freeze what was added."""
        return Graph(tuple(self.nodes), output, source, aliases)


def needs_grad(ins: list[tuple[int, ...]], is_input: list[bool], output: int) -> bytearray:
    """1 for nodes on a path from an input to the output: the ones backward visits."""
    n = len(ins)
    depends = bytearray(is_input)
    for i, args in enumerate(ins):  # topological order, so one forward sweep suffices
        if args and not depends[i]:
            for j in args:
                if depends[j]:
                    depends[i] = 1
                    break
    active = bytearray(n)
    active[output] = depends[output]
    for i in range(output, -1, -1):  # and one backward sweep finds the output's ancestors
        if active[i]:
            for j in ins[i]:
                if depends[j]:
                    active[j] = 1
    return active


def check_names(graph: Graph, names: list[str], values) -> None:
    """Every input has a value and every value is an input, or a one-line error saying which."""
    missing = [name for name in names if name not in values]
    if missing:
        raise MissingValueError(f"no value for input {', '.join(missing)} "
                                f"(give it as --{missing[0]} NUMBER or {missing[0]}=NUMBER)")
    if len(values) > len(names):
        known = set(names)
        extra = [n for n in values if n not in known]
        shadowed = next((n for n in extra if n in CONSTANTS), None)
        if shadowed:
            raise UsageError(f"{shadowed!r} is the constant {shadowed} = {CONSTANTS[shadowed]:.6g} "
                             f"in this formula, not an input: rename your variable (e.g. "
                             f"{shadowed}1), or assign it in the formula ({shadowed} = ...)")
        raise UsageError(f"{', '.join(map(repr, extra))} is not an input of the formula "
                         f"(its inputs: {', '.join(graph.input_names) or 'none'})")
