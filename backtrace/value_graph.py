"""Walking a graph of `backtrace.Value` objects: everything a value depends on, in creation order,
and backward straight over the objects (no flat IR is built first).

A Value keeps its inputs in two slots, `_a` and `_b` (None when absent; an op of three or more
inputs keeps them all in `_a`, with MANY in `_b`). `_n` is its place in creation order, which is a
topological order (inputs are always older), doubled, plus 1 for a value that does not depend on
any input (a number mixed in, or what is computed from numbers only: no gradient reaches it).
`_g` is None except during a walk, which marks what it visits there and keeps backward's scratch
gradient in it; one lock keeps walks from two threads apart (graphs may share their parameters).
"""
from __future__ import annotations

import threading
from operator import attrgetter
from typing import Any

from .engine import NodeFailure, check_finite
from .ops import Op, one

MANY = object()  # in _b: _a holds all the inputs

creation = attrgetter("_n")
_scratch = attrgetter("_g")
_walking = threading.Lock()  # held by every walk: the marks live on the nodes


def ancestors(root: Any) -> tuple[list, list]:
    """root and everything it depends on, each once, breadth first, as (op nodes, leaves), their
    `_g` set to 0.0 (`unmark` them when done; hold `_walking` meanwhile).

    Iterative, so a million-deep chain is fine. Visited nodes are marked on themselves rather than
    kept in a set (no hashing: 1.6x faster measured on 500k nodes), and leaves are kept apart:
    backward never visits them, so half the nodes of a typical graph need no sorting."""
    root._g = 0.0
    if root._a is None:
        return [], [root]
    ops, leaves = [root], []
    op, leaf = ops.append, leaves.append
    try:
        for v in ops:  # the list grows while it is read: a queue with no pops
            a, b = v._a, v._b
            if b is MANY:
                _visit(a, op, leaf)
                continue
            if a._g is None:
                a._g = 0.0
                (leaf if a._a is None else op)(a)
            if b is not None and b._g is None:
                b._g = 0.0
                (leaf if b._a is None else op)(b)
    except BaseException:  # MemoryError, KeyboardInterrupt: leave no node marked
        unmark(ops, leaves)
        raise
    return ops, leaves


def _visit(inputs: tuple, op, leaf) -> None:
    """`ancestors`' step for the inputs of an op of three or more."""
    for c in inputs:
        if c._g is None:
            c._g = 0.0
            (leaf if c._a is None else op)(c)


def unmark(*groups: list) -> None:
    """Make the nodes of a walk unvisited again."""
    for nodes in groups:
        for v in nodes:
            v._g = None


def topological(root: Any) -> list:
    """Everything root depends on, oldest first."""
    with _walking:
        ops, leaves = ancestors(root)
        ops += leaves
        unmark(ops)
    ops.sort(key=creation)
    return ops


def backward(root: Any) -> None:
    """Add ∂root/∂v to the `.grad` of everything root depends on (`Value.backward`).

    Straight over the Value objects, newest first: the reference engine's order and sums, so
    `trace()` agrees bit for bit, without the flat lists, index and tape the engine builds to
    record every step. Local derivatives come from the op table; this only multiplies and adds.
    A failing local derivative or a gradient that is not finite raises a DomainError naming the
    node, and then no `.grad` has changed."""
    with _walking:
        ops, leaves = ancestors(root)
        try:
            _backward(root, ops, leaves)
        except BaseException:
            unmark(ops, leaves)
            raise


def _backward(root: Any, ops: list, leaves: list) -> None:
    """`backward` once the walk is done: the chain rule, the finite check, then the `.grad`s."""
    ops.sort(key=creation, reverse=True)
    if not root._n & 1:  # else a number: no gradient anywhere
        root._g = 1.0
        if ops:  # else root is an input: ∂root/∂root = 1 and nothing else
            _chain(ops, leaves)
    nodes = ops + leaves
    grads = list(map(_scratch, nodes))
    check_finite(grads, lambda i: _name(nodes, nodes[i]), "gradient")
    for v, g in zip(nodes, grads):
        v.grad += g
        v._g = None


def _chain(ops: list, leaves: list) -> None:
    """The chain rule over op nodes, newest first: each passes upstream × local to its inputs
    (`leaves` only serve to name a node in an error)."""
    v = ops[0]
    try:
        for v in ops:
            if v._n & 1:  # computed from numbers only
                continue
            a, b, up, derivs = v._a, v._b, v._g, v._row.derivs
            # One and two inputs unrolled, as in the engine. A number gets no local derivative at
            # all: pow's d/db = out*log(a) would fail for a < 0 even in x ** 2.
            if b is None:
                a._g += derivs[0](a.data, v.data) * up
            elif b is not MANY:
                da, db = derivs
                if da is one:  # + and -: no call for a derivative of 1
                    if not a._n & 1:
                        a._g += up
                    if not b._n & 1:
                        b._g += up if db is one else db(a.data, b.data, v.data) * up
                else:
                    x, y, out = a.data, b.data, v.data
                    if not a._n & 1:
                        a._g += da(x, y, out) * up
                    if not b._n & 1:
                        b._g += db(x, y, out) * up
            else:
                xs = [c.data for c in a]
                xs.append(v.data)  # every local derivative is d(*inputs, out)
                for c, deriv in zip(a, derivs):
                    if not c._n & 1:
                        c._g += deriv(*xs) * up
    except (ArithmeticError, ValueError) as exc:
        raise _failed_derivative(v, exc, ops + leaves) from None


def inputs_of(v: Any) -> tuple:
    """v's inputs as a tuple, in slot order."""
    a, b = v._a, v._b
    if a is None:
        return ()
    return (a,) if b is None else a if b is MANY else (a, b)


def _name(nodes: list, v: Any) -> str:
    """How v is named in errors: its label, else %k, k its place in creation order among `nodes`
    (as the engine and `trace()` number them)."""
    return v.label or f"%{sorted(nodes, key=creation).index(v)}"


def _failed_derivative(v: Any, exc: Exception, nodes: list) -> Exception:
    """The DomainError naming the node whose local derivative failed (the flat lists the message
    needs are built here, on the error path only)."""
    order = sorted(nodes, key=creation)
    index = {u: k for k, u in enumerate(order)}
    ops = [u._row if isinstance(u._row, Op) else None for u in order]
    ins = [tuple(map(index.__getitem__, inputs_of(u))) for u in order]
    return NodeFailure(index[v], exc, "the local derivative").domain_error(
        ops, ins, [u.data for u in order], lambda i: order[i].label or f"%{i}")
