"""A micrograd-style scalar `Value` over the reference engine, for building graphs in Python."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import count
from numbers import Real

from . import value_graph
from .engine import NodeFailure, Tape, backward, check_finite, graph_trace
from .ir import CONST, INPUT, Graph, GraphBuilder, needs_grad
from .values import format_number
from .ops import FUNCTIONS, ROWS, Op
from .traces import Trace
from .value_graph import MANY, inputs_of, topological

_created = count(0, 2)  # even: see `_n` in value_graph (+ 1 for what depends on no input)


class Value:
    """A scalar that remembers how it was computed; `backward()` fills `.grad` like PyTorch.

    ``Value(3.0, "x")`` is a named input; micrograd's own form ``Value(data, (a, b), '*')`` makes
    the node of an op (by its symbol or name: ``+ - * / ** tanh exp relu ReLU``, ``**2``), and
    ``v._op`` reads as micrograd's string ('' for inputs and numbers)."""

    # How the nodes are stored is value_graph's business (it walks them): inputs in two slots
    # instead of a tuple, creation order, the walk's scratch. One object per node of 96 bytes
    # (eight slots) instead of two halves the garbage collector's work, which is most of what
    # building a big graph costs.
    __slots__ = ("data", "grad", "label", "_row", "_a", "_b", "_n", "_g")

    def __init__(self, data: float, _children: tuple | str | None = (), _op: str | Op = "",
                 label: str | None = None) -> None:
        self.data = float(data)
        self.grad = 0.0
        if not _children and not _op:  # a plain input: the common case, kept fast
            self._a = self._b = self._row = None
            self._n = next(_created)
        else:
            children, self._row, label = _parts(_children, _op, label)
            self._a, self._b = _link(children)
            number = all(c._n & 1 for c in children) if children else self._row == CONST
            self._n = next(_created) + number
        self.label = label
        self._g = None

    @property
    def _prev(self) -> tuple[Value, ...]:
        """The inputs this value was computed from (micrograd's name; a tuple, in slot order)."""
        return inputs_of(self)

    @property
    def _op(self) -> str:
        """The op as micrograd writes it: '+', '*', 'tanh', ...; '' for inputs and numbers."""
        row = self._row
        return row.symbol if isinstance(row, Op) else ""

    def __repr__(self) -> str:
        name = f"{self.label}, " if self.label else ""
        return f"Value({name}data={self.data:g}, grad={self.grad:g})"

    def backward(self) -> None:
        """Accumulate ∂self/∂leaf into every leaf's `.grad` (and ∂self/∂v into each v's).

        Every call starts from fresh gradients, so a second call adds the same amount again
        (twice the value, as in PyTorch) instead of compounding stale intermediate grads. When a
        local derivative fails or a gradient is not finite, a DomainError names the node and no
        `.grad` changes."""
        value_graph.backward(self)

    def trace(self) -> Trace:
        """This value's forward and backward pass as a Trace (leaves `.grad` untouched)."""
        order, tape = _run_backward(self)
        return graph_trace(to_graph(self), tape)  # same order as the tape: no inputs put first

    def zero_grad(self) -> None:
        """Set `.grad` to 0 on this value and everything it was computed from."""
        for v in topological(self):
            v.grad = 0.0


_new = object.__new__


def _link(children: tuple) -> tuple:
    """The (_a, _b) slots for a node's inputs."""
    if len(children) > 2:
        return children, MANY
    return (*children, None, None)[:2]


def _value(x) -> Value:
    """A number mixed into an expression, as a constant Value; NotImplemented for anything else."""
    if isinstance(x, Real) and not isinstance(x, bool):
        return _node(CONST, float(x), None, None, 1)
    return NotImplemented


# micrograd's op strings, and every row's symbol and call names: Value(data, (a, b), '*').
_BY_TEXT = {**{(op.symbol, op.arity): op for op in ROWS if not op.tensor_only},
            **{(name.lower(), op.arity): op for name, op in FUNCTIONS.items() if not op.tensor_only}}


def _parts(children: tuple | str | None, op: str | Op,
           label: str | None) -> tuple[tuple, Op | str | None, str | None]:
    """(inputs, row, label) of a Value: Value(3.0, "x") names an input, Value(2, _op=CONST) is a
    number mixed in, Value(data, (a, b), '*') is micrograd's op node."""
    if children.__class__ is str:
        label, children = children, ()
    if not children and (not op or op == CONST):
        return (), op or None, label
    return (*_op_node(tuple(children or ()), op), label)


def _op_node(children: tuple, op: str | Op) -> tuple[tuple, Op | str | None]:
    """(inputs, row) of a node: None for an input, CONST for a number, else its op-table row."""
    if isinstance(op, Op) or op == CONST:
        return children, op
    if not children:
        if op:
            raise ValueError(f"Value(data, (), {op!r}): an op needs its inputs, e.g. "
                             f"Value(6.0, (a, b), '*')")
        return (), None
    if not all(isinstance(c, Value) for c in children):
        raise TypeError("Value(data, children, op): the children must be Values")
    text = str(op)
    row = _BY_TEXT.get((text.lower(), len(children)))
    if row is None and text.startswith("**") and len(children) == 1:  # micrograd's x**2: '**2'
        try:
            exponent = float(text[2:])
        except ValueError:
            exponent = None
        if exponent is not None:
            return (children[0], Value(exponent, _op=CONST)), _BY_TEXT[("**", 2)]
    if row is None:
        known = sorted({t for t, _ in _BY_TEXT})
        raise ValueError(f"Value(data, children, {text!r}): unknown op for {len(children)} "
                         f"input{'s' * (len(children) > 1)}; known: {' '.join(known)}, **k")
    return children, row


def _failure(op: Op, exc: Exception, args: tuple[Value, ...]) -> Exception:
    vals = [0.0, *(a.data for a in args)]
    names = [op.name, *(a.label or format_number(a.data) for a in args)]
    return NodeFailure(0, exc, "the value").domain_error(
        [op], [tuple(range(1, len(vals)))], vals, names.__getitem__)


def _node(op: Op | str, data: float, a, b, number: int) -> Value:
    """A new node; `number` is 1 when it depends on no input (see value_graph)."""
    # Plain stores: a tuple assignment of many attributes would build and unpack a tuple per node.
    out = _new(Value)
    out.data = data
    out.grad = 0.0
    out.label = None
    out._row = op
    out._a = a
    out._b = b
    out._n = next(_created) + number
    out._g = None
    return out


def _binary(op: Op):
    """`a <op> b` on Values for one op-table row (numbers become constants)."""
    forward = op.forward

    def apply(a, b) -> Value:
        if a.__class__ is not Value and (a := _value(a)) is NotImplemented:
            return NotImplemented
        if b.__class__ is not Value and (b := _value(b)) is NotImplemented:
            return NotImplemented
        try:
            return _node(op, forward(a.data, b.data), a, b, a._n & b._n & 1)
        except (ArithmeticError, ValueError) as exc:
            raise _failure(op, exc, (a, b)) from None

    apply.__name__, apply.__doc__ = op.name, f"{op.doc} ({op.rule_text(0)})"
    return apply


def _unary(op: Op):
    """`op(a)` on a Value for one op-table row."""
    forward = op.forward

    def apply(a: Value) -> Value:
        try:
            return _node(op, forward(a.data), a, None, a._n & 1)
        except (ArithmeticError, ValueError) as exc:
            raise _failure(op, exc, (a,)) from None

    apply.__name__, apply.__doc__ = op.name, f"{op.doc} ({op.rule_text(0)})"
    return apply


def _any_arity(op: Op):
    """`op(a, b, c, ...)` on Values for an op-table row of three or more inputs."""
    forward = op.forward

    def apply(*args) -> Value:
        if len(args) != op.arity:
            raise TypeError(f"{op.name}() takes {op.arity} arguments, got {len(args)}")
        vals = tuple(a if a.__class__ is Value else _value(a) for a in args)
        if NotImplemented in vals:
            return NotImplemented
        try:
            return _node(op, forward(*(v.data for v in vals)), vals, MANY,
                         all(v._n & 1 for v in vals))
        except (ArithmeticError, ValueError) as exc:
            raise _failure(op, exc, vals) from None

    apply.__name__, apply.__doc__ = op.name, f"{op.doc} ({op.rule_text(0)})"
    return apply


def _swapped(fn):
    return lambda self, other: fn(other, self)


def _method(op: Op):
    # One and two inputs have their own closures: Values are built in hot Python loops.
    return {1: _unary, 2: _binary}.get(op.arity, _any_arity)(op)


# Operators (a + b, 2 ** a, -a) and methods (exp, log, tanh, relu, max, clamp, ...) straight from
# the op table: a row's `dunder` names its operator, its call names are the methods.
for _op in ROWS:
    if _op.dunder:
        _fn = _method(_op)
        setattr(Value, f"__{_op.dunder}__", _fn)
        if _op.arity == 2:
            setattr(Value, f"__r{_op.dunder}__", _swapped(_fn))
for _name, _op in FUNCTIONS.items():
    if not _op.tensor_only:  # sum, softmax, ... take tensors: formulas and backtrace.math have them
        setattr(Value, _name, _method(_op))


def to_graph(out: Value, inputs: Sequence[Value] = (), names: Mapping[Value, str] | None = None,
             source: str = "") -> Graph:
    """The flat IR of everything `out` depends on: `inputs` first (used or not), then oldest first.

    Nodes are named by `names`, else by their label; a name already taken leaves the node
    anonymous (%k), and an unnamed leaf is called v<k>."""
    names = names or {}
    order = topological(out)
    builder = GraphBuilder(max_nodes=len(order) + len(inputs) + 1)
    index = {v: builder.add(INPUT, name=v.label) for v in inputs}
    taken = {v.label for v in inputs}
    for k, v in enumerate(order):
        if v in index:
            continue
        name = names.get(v, v.label)
        if name in taken:
            name = None
        if v._row is None:
            name = name or f"v{k}"
            index[v] = builder.add(INPUT, name=name)
        elif v._row == CONST:
            index[v] = builder.add(CONST, value=v.data, name=name)
        else:
            index[v] = builder.add(v._row.name, tuple(index[c] for c in inputs_of(v)), name=name)
        taken.add(name)
    return builder.build(index[out], source)


def _run_backward(root: Value) -> tuple[list[Value], Tape]:
    order = topological(root)
    index = {v: k for k, v in enumerate(order)}
    ops = [v._row if isinstance(v._row, Op) else None for v in order]
    ins = [tuple(map(index.__getitem__, inputs_of(v))) for v in order]
    vals = [v.data for v in order]
    is_input = [v._row is None for v in order]
    tape = Tape(ops, ins, vals)
    names = lambda i: order[i].label or f"%{i}"  # noqa: E731
    try:
        backward(tape, len(order) - 1, needs_grad(ins, is_input, len(order) - 1))
    except NodeFailure as failure:
        raise failure.domain_error(ops, ins, vals, names) from None
    check_finite(tape.grads, names, "gradient")
    return order, tape
