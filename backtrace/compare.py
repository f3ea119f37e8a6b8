"""Cross-checking two traces of the same graph node by node: values, gradients, every backward edge.

Numbers may be floats, tensors or TensorStats; the verdict names the first node, in the first
trace's backward order, where the two differ, with the slot and both numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .values import format_number
from .traces import Trace
from .values import TensorStats, is_tensor, nested_shape, numbers

MISSING = "missing"


@dataclass(frozen=True)
class Difference:
    """One disagreement: where, which quantity, and both numbers."""

    node: str
    what: str  # "value", "gradient", "upstream", "local", "contribution"
    slot: int | None
    a: Any
    b: Any
    delta: float

    def describe(self, names: tuple[str, str]) -> str:
        """'%0 gradient: reference -4, torch -3.9 (|Δ| = 0.1)'."""
        where = f"{self.node} {self.what}" + (f" (slot {self.slot})" if self.slot is not None else "")
        return (f"{where}: {names[0]} {_show(self.a)}, {names[1]} {_show(self.b)} "
                f"(|Δ| = {_show(self.delta)})")


@dataclass(frozen=True)
class Verdict:
    """Whether two opinions agree, the largest difference, and the first disagreement."""

    names: tuple[str, str]
    agree: bool
    max_abs_diff: float
    first: Difference | None
    compared: int  # how many numbers were compared
    note: str = ""

    def line(self) -> str:
        """One line for the CLI: 'engines agree, max |Δ| = 0'."""
        a, b = self.names
        subject = "engines" if {a, b} <= {"reference", "torch"} else f"{a} and {b}"
        if self.agree:
            text = f"{subject} agree, max |Δ| = {_show(self.max_abs_diff)}"
        else:
            text = (f"{subject} disagree, max |Δ| = {_show(self.max_abs_diff)}; first difference "
                    f"in backward order at {self.first.describe(self.names)}")
        return f"{text} ({self.note})" if self.note else text

    def to_dict(self) -> dict:
        """JSON-ready."""
        first = None
        if self.first is not None:
            first = {"node": self.first.node, "what": self.first.what, "slot": self.first.slot,
                     self.names[0]: _plain(self.first.a), self.names[1]: _plain(self.first.b),
                     "delta": _plain(self.first.delta)}
        return {"between": list(self.names), "agree": self.agree,
                "max_abs_diff": _plain(self.max_abs_diff), "first": first,
                "compared": self.compared, "line": self.line()}


def _show(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-4 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return format_number(v)
    if v is None:
        return "none"
    return str(v)


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, (int, float, str)) or v is None:
        return v
    return str(v)


def delta(a: Any, b: Any) -> float:
    """Largest absolute difference between two numbers, tensors or stats; inf when incomparable."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if isinstance(a, str) or isinstance(b, str):
        return 0.0 if a == b else math.inf
    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or len(a) != len(b):
            return math.inf
        return max((delta(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, list) or isinstance(b, list):  # tensors of the formula engines: nested lists
        if nested_shape(a) != nested_shape(b):
            return math.inf
        return max(map(_num, numbers(a), numbers(b)), default=0.0)
    if isinstance(a, TensorStats) or isinstance(b, TensorStats):
        if not (isinstance(a, TensorStats) and isinstance(b, TensorStats)) or a.shape != b.shape:
            return math.inf
        return max(_num(x, y) for x, y in zip(a.numbers(), b.numbers()))
    if hasattr(a, "shape") or hasattr(b, "shape"):  # tensors (torch imported by whoever made them)
        import torch

        ta, tb = torch.as_tensor(a).double(), torch.as_tensor(b).double()
        if ta.shape != tb.shape:
            return math.inf
        if ta.numel() == 0:
            return 0.0
        same = (ta == tb) | (ta.isnan() & tb.isnan())
        return float((ta - tb).abs().masked_fill(same, 0.0).max())
    return _num(float(a), float(b))


def _num(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) if math.isfinite(a) and math.isfinite(b) else math.inf


def close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """The one tolerance rule of backtrace: two values agree when, element by element,
    |x - y| <= atol + rtol · max(|x|, |y|); NaN agrees with NaN and an infinity only with itself.
    Values of different sizes never agree; values that are not numbers agree when equal."""
    if is_tensor(a) and is_tensor(b):  # element by element on the device, not as Python floats
        import torch

        x, y = a.detach().double(), b.detach().double().to(a.device)
        if x.shape != y.shape:
            return False
        same = (x == y) | (x.isnan() & y.isnan())
        bound = atol + rtol * torch.maximum(x.abs(), y.abs())
        return bool((same | ((x - y).abs() <= bound)).all())
    if (isinstance(a, list) or isinstance(b, list)) and nested_shape(a) != nested_shape(b):
        return False
    xs, ys = numbers(a), numbers(b)
    if xs is None or ys is None:
        return xs is None and ys is None and a == b
    return len(xs) == len(ys) and all(_near(x, y, rtol, atol) for x, y in zip(xs, ys))


def _near(x: float, y: float, rtol: float, atol: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= atol + rtol * max(abs(x), abs(y))


def compare(a: Trace, b: Trace, names: tuple[str, str] | None = None, rtol: float = 1e-9,
            atol: float = 1e-12) -> Verdict:
    """Compare every value, gradient, upstream, local derivative and contribution of two traces."""
    names = names or (a.engine, b.engine)
    steps_b = {s.node: s for s in b.steps}
    steps_a = {s.node: s for s in a.steps}
    worst, first, count = 0.0, None, 0

    def check(node: str, what: str, slot: int | None, x: Any, y: Any) -> None:
        nonlocal worst, first, count
        count += 1
        d = delta(x, y)
        worst = max(worst, d)
        if first is None and not close(x, y, rtol, atol):
            first = Difference(node, what, slot, x, y, d)

    for node_id in a.backward_order():
        na = a.node(node_id)
        try:
            nb = b.node(node_id)
        except KeyError:
            check(node_id, "node", None, na.value, MISSING)
            continue
        check(node_id, "value", None, na.value, nb.value)
        check(node_id, "gradient", None, na.grad, nb.grad)
        sa, sb = steps_a.get(node_id), steps_b.get(node_id)
        if sa is None and sb is None:
            continue
        if sa is None or sb is None:
            check(node_id, "step", None, "step" if sa else None, "step" if sb else None)
            continue
        check(node_id, "upstream", None, sa.upstream, sb.upstream)
        for ea, eb in zip(sa.edges, sb.edges):
            # A tensor edge's local factor is the reference engine's way of writing its rule;
            # torch has only the product (described, not computed), so a local that one side
            # has not computed is not compared; the contribution still is, element by element.
            if ea.local is not None and eb.local is not None or ea.contribution is None:
                check(node_id, "local", ea.slot, ea.local, eb.local)
            check(node_id, "contribution", ea.slot, ea.contribution, eb.contribution)
        if len(sa.edges) != len(sb.edges):
            check(node_id, "edges", None, len(sa.edges), len(sb.edges))
    return Verdict(names, first is None, worst, first, count)
