"""Names: of ops (``Tensor.__iadd__`` -> ``add_``), of modules and parameters (known by weak
reference), and of the nodes of one backward graph (names= keys, parameter names, the user's
variable names, then fresh ``%k`` ids)."""
from __future__ import annotations

import itertools
import re
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from . import compat, holding
from .nodes import NodeInfo

_INPLACE_DUNDERS = {"add", "sub", "mul", "div", "truediv", "floordiv", "pow", "matmul", "and", "or",
                    "xor"}
_REFLECTED = {"add", "sub", "mul", "div", "truediv", "floordiv", "pow", "matmul"}
_ALIASES = {"truediv": "div", "floordiv": "floor_divide"}


# -- ops
def snake(name: str) -> str:
    """LogSoftmaxBackward0 -> log_softmax: a readable op name for nodes the forward did not stamp."""
    base = re.sub(r"Backward\d*$", "", name) or name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base).lower()


def op_name(func: Any) -> tuple[str, bool]:
    """The op's name and whether it works in place: Tensor.__iadd__ -> ('add_', True)."""
    name = getattr(func, "__name__", None) or str(func)
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name == "setitem":
            return name, True
        if name.startswith("i") and name[1:] in _INPLACE_DUNDERS:
            return _ALIASES.get(name[1:], name[1:]) + "_", True
        if name.startswith("r") and name[1:] in _REFLECTED:
            name = name[1:]
        name = _ALIASES.get(name, name)
    return name, name.endswith("_") and not name.endswith("__")


# -- modules and parameters
class WeakNames:
    """Objects known by name while they live: an entry goes when its object is freed (so its id
    can be reused), and a module built inside forward on every call is not kept."""

    def __init__(self) -> None:
        self._table: dict[int, tuple[weakref.ref, str]] = {}  # id -> (weak reference, name)

    def add(self, obj: Any, name: str) -> str:
        """Know obj by name (a name already on record stays); returns the name on record."""
        key = id(obj)
        if key not in self._table:
            table = self._table
            self._table[key] = (weakref.ref(obj, lambda _, key=key: table.pop(key, None)), name)
        return self._table[key][1]

    def get(self, obj: Any) -> str | None:
        """obj's name, if obj itself (not an earlier object with its id) is on record."""
        known = self._table.get(id(obj))
        return known[1] if known is not None and known[0]() is obj else None

    def live(self) -> list[tuple[Any, str]]:
        """(object, name) of every entry whose object is still alive, in the order added."""
        entries = list(self._table.values())
        return [(obj, name) for ref, name in entries if (obj := ref()) is not None]

    def clear(self) -> None:
        """Forget every entry."""
        self._table.clear()

    def __len__(self) -> int:
        return len(self._table)


# -- the nodes of one backward graph
class _Given:
    """The names the user's tensors give to graph nodes, per node and output."""

    def __init__(self, infos: list[NodeInfo]) -> None:
        self.infos = infos
        self.by_node = {id(info.node): i for i, info in enumerate(infos)}
        # Leaves by their tensor (AccumulateGrad.variable is the very object), not through
        # get_gradient_edge, which makes a view of the leaf and fails for sparse ones.
        self.leaves = {id(v): (i, v) for i, info in enumerate(infos)
                       if info.torch_type == "AccumulateGrad"
                       and (v := getattr(info.node, "variable", None)) is not None}
        self.names: dict[int, dict[int, str]] = {}  # info index -> output_nr -> name
        self.used: set[str] = set()

    def _node(self, t: torch.Tensor) -> tuple[int | None, int]:
        """The index of the node that made t in this graph (None if not in it), and t's output."""
        if t.is_leaf:
            i, v = self.leaves.get(id(t), (None, None))
            return (i if v is t else None), 0
        return self.by_node.get(id(holding.grad_fn(t))), t.output_nr

    def note(self, t: Any, name: str, as_id: bool) -> None:
        """Name the node (and output) that made t; with `as_id`, also make it the node's id."""
        if not isinstance(t, torch.Tensor) or not t.requires_grad:
            return
        i, output_nr = self._node(t)
        if i is None:
            return
        self.names.setdefault(i, {}).setdefault(output_nr, name)
        info = self.infos[i]
        if as_id and not info.id and name not in self.used:  # ids stay unique: first name wins
            info.id = name
            self.used.add(name)

    def apply(self) -> None:
        """Each named node's name: its outputs' names, in output order."""
        for i, names in self.names.items():
            self.infos[i].name = ", ".join(names[k] for k in sorted(names))


def name_nodes(infos: list[NodeInfo], names: Mapping[str, torch.Tensor], params: WeakNames,
               frame: Any) -> None:
    """Ids: names= keys, parameter names, `frame`'s variable names for leaves, then %0, %1, ..."""
    given = _Given(infos)
    for name, t in names.items():
        given.note(t, name, True)
    for p, name in params.live():
        given.note(p, name, True)
    if frame is not None:
        for name, v in compat.frame_tensors(frame):
            if not name.startswith("_"):
                given.note(v, name, v.is_leaf)  # leaves take the variable's name as id
    taken = {info.id for info in infos if info.id}
    given.apply()
    _name_earlier_versions(infos)
    fresh = _fresh_ids(taken)
    for info in infos:
        for slot, (c, _) in enumerate(info.children):
            if c < 0:
                info.const_ids[slot] = next(fresh)
        if not info.id:
            info.id = next(fresh)


def _name_earlier_versions(infos: list[NodeInfo]) -> None:
    """In-place ops: every earlier version of a named tensor carries the name too."""
    for i, info in enumerate(infos):
        if info.name and info.stamp is not None and info.stamp.inplace:
            j, name = i, info.name
            while infos[j].stamp is not None and infos[j].stamp.inplace and infos[j].children:
                j = infos[j].children[0][0]
                if j < 0 or infos[j].name:
                    break
                infos[j].name = name


def _fresh_ids(taken: set[str]) -> Iterator[str]:
    """%0, %1, ... skipping the ids a name already took."""
    return (f"%{k}" for k in itertools.count() if f"%{k}" not in taken)
