"""What the tracer knows about one autograd node: the forward's Stamp, kept in the node's public
``Node.metadata``, and the NodeInfo gathered for each node of the graph before backward runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stamp:
    """What the forward pass tells us about one autograd node."""

    op: str
    module: str
    saved_hooks: bool  # created under saved_tensors_hooks (checkpoint): saved tensors are off limits
    inplace: bool = False
    values: dict = field(default_factory=dict)  # output_nr -> value (stats placeholder or tensor)
    module_output: str | None = None
    source: tuple[str, int] | None = None  # (path, line) of the user's code that made the node


@dataclass(slots=True)
class NodeInfo:
    """Everything known about one graph node before backward runs."""

    node: Any
    torch_type: str
    stamp: Stamp | None
    children: tuple  # ((child index or -1, output_nr), ...) in input-slot order
    id: str = ""
    kind: str = "op"
    name: str = ""
    variable_value: Any = None
    parent: int = -1
    const_ids: dict = field(default_factory=dict)  # input slot -> id of a leaf needing no grad
    custom: bool = False  # a custom autograd.Function's node
    shapes: Any = None  # (shape, dtype) per output
    module: str = ""  # leaves: the module owning the parameter
    opaque: str | None = None  # ops: why their insides are not ours to re-run (jacobians.opaque)
