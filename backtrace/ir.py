"""The flat IR: frozen nodes in topological order, inputs as ordered tuples of node indices."""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LimitError
from .ops import OPS
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
        return OPS[node.op].expression(*(self.label(j) for j in node.inputs))


class GraphBuilder:
    """Appends nodes in topological order and hands out deterministic ids."""

    def __init__(self, max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self.nodes: list[Node] = []
        self.max_nodes = max_nodes
        self._anonymous = 0

    def add(self, op: str, inputs: tuple[int, ...] = (), value: float | None = None,
            name: str | None = None) -> int:
        """Append a node and return its index."""
        if len(self.nodes) >= self.max_nodes:
            raise LimitError(f"formula has more than {self.max_nodes:,} nodes (raise max_nodes)")
        if name is None:
            name, named = f"%{self._anonymous}", False
            self._anonymous += 1
        else:
            named = True
        self.nodes.append(Node(name, op, inputs, value, named))
        return len(self.nodes) - 1

    def rename(self, i: int, name: str) -> None:
        """Give an anonymous node the user's name (``q = x + y`` names the add node ``q``)."""
        node = self.nodes[i]
        self.nodes[i] = Node(name, node.op, node.inputs, node.value, True)

    def build(self, output: int, source: str = "", aliases: tuple = ()) -> Graph:
        """Freeze what was added."""
        return Graph(tuple(self.nodes), output, source, aliases)
