"""The op table: one row per op. Parser, engines, `Value`, `backtrace.math`, renderers and
`backtrace ops` all read it.

Each row holds the op's forward function on floats, one local-derivative function per input slot
(called as ``d(*inputs, out)``, returning ∂out/∂input), the same derivatives as text over the
operands ``{a}, {b}, {c}, ...`` and ``{out}``, its symbol, how it is written (infix, prefix or call),
its precedence, its Python operator (`dunder`) and its torch function as a dotted path. Engines loop
over the slots, so an op of any arity is one row. Derivatives at kinks follow PyTorch (relu'(0) = 0,
|x|'(0) = 0, max/min split ties evenly, clamp's bounds as torch.clamp) so the two engines agree.

On tensors a row runs through its `tensor_rule` (backtrace.tensor_ops): scalar rows element by
element, with broadcasting; the rows with no scalar form (@, sum, mean, transpose, softmax,
log_softmax, cross_entropy, mse) name their rule, the integer parameters their calls take
(``mean(x, 0)``: the axis) and the keywords their torch function needs.
"""
from __future__ import annotations

import importlib
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from string import ascii_lowercase
from typing import Any

from . import tensor_ops
from .tensor import shape_text
from .tensor_ops import TensorRule

INFIX, PREFIX, CALL = "infix", "prefix", "call"


def operands(arity: int) -> tuple[str, ...]:
    """The names rules use for the input slots: a, b, c, ..."""
    return tuple(ascii_lowercase[:arity])


@dataclass(frozen=True, kw_only=True)
class Op:
    """One row of the op table."""

    name: str
    forward: Callable[..., float] | None = None  # on floats; None for tensor-only rows
    derivs: tuple[Callable[..., float], ...] = ()  # d(*inputs, out) -> ∂out/∂input, per input slot
    rules: tuple[str, ...] = ()  # the same derivatives as text over {a}, {b}, ... and {out}
    symbol: str = ""  # how it is drawn and parsed; a call's symbol is its name
    kind: str = CALL
    precedence: int = 100  # binding power; calls and atoms bind tightest
    right_assoc: bool = False
    dunder: str = ""  # Python operator on Value: "add" gives __add__ and __radd__, "neg" __neg__
    spellings: tuple[str, ...] = ()  # more call names for the same op: pow(a, b) beside a ** b
    torch: str = ""  # the torch function, a dotted path ("torch.add", "torch.nn.functional.relu")
    doc: str = ""
    tensor: TensorRule | None = None  # tensor-only rows; scalar rows run element by element
    params: tuple[tuple[str, Any], ...] = ()  # optional integer arguments after the inputs: (name, default)
    torch_kwargs: tuple[tuple[str, Any], ...] = ()  # keywords the torch function always gets
    internal: bool = False  # inserted by the engines (broadcast), not written in formulas

    def __post_init__(self) -> None:
        if not self.symbol:
            object.__setattr__(self, "symbol", self.name)
        if len(self.derivs) != len(self.rules):
            raise ValueError(f"op {self.name}: one rule text per derivative")
        if self.tensor is None:  # a scalar row: the same op element by element
            object.__setattr__(self, "tensor", tensor_ops.elementwise(self))

    @property
    def arity(self) -> int:
        """How many inputs the op takes: one per local derivative."""
        return len(self.derivs) or self.tensor.arity

    @property
    def tensor_only(self) -> bool:
        """True for rows with no scalar form (@, sum, softmax, ...)."""
        return self.forward is None

    @property
    def tensor_rule(self) -> TensorRule:
        """How the op runs on tensors."""
        return self.tensor

    def expression(self, *args: str, params: tuple[tuple[str, Any], ...] = ()) -> str:
        """How the op is written over already-formatted operands, e.g. ``a * b``, ``mean(x, 0)``."""
        if self.kind == INFIX:
            return f" {self.symbol} ".join(args)
        if self.kind == PREFIX:
            return f"{self.symbol}{args[0]}"
        extra = [shape_text(v) if isinstance(v, tuple) else str(v) for _, v in params]
        return f"{self.symbol}({', '.join([*args, *extra])})"

    def rule(self, slot: int, *names: str, out: str = "out") -> str:
        """The local derivative of input `slot` as text, over the given operand names."""
        return self.rules[slot].format(**dict(zip(operands(self.arity), names)), out=out)

    def rule_text(self, slot: int) -> str:
        """The textbook form of a rule, e.g. ``d(a*b)/da = b``; tensor rows as their
        vector-Jacobian product, ``∂L/∂b = aᵀ · g`` (g: the upstream gradient ∂L/∂out)."""
        names = operands(self.arity)
        if self.tensor_only:
            text = self.tensor.rules[slot].format(g="g", out="out", **dict(zip(names, names)))
            return f"∂L/∂{names[slot]} = {text}"
        expr = self.expression(*names).replace(" ", "")
        return f"d({expr})/d{names[slot]} = {self.rule(slot, *names, out=expr)}"

    def torch_function(self) -> Callable[..., Any]:
        """The torch function of this row (imports its module: call only when torch is wanted)."""
        module, _, attr = self.torch.rpartition(".")
        return getattr(importlib.import_module(module), attr)


def _sigmoid(a: float) -> float:
    # Two branches so exp never overflows: sigmoid(-1000) is 0, not an OverflowError.
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    ea = math.exp(a)
    return ea / (1.0 + ea)


def _pow_da(a: float, b: float, out: float) -> float:
    # PyTorch masks the exponent-zero case to 0: x**0 is flat, also at x = 0 where b*a**(b-1)
    # would divide by zero.
    if b == 0.0:
        return 0.0
    return b * math.pow(a, b - 1.0)


def _pow_db(a: float, b: float, out: float) -> float:
    # PyTorch masks the base-zero case to 0 rather than 0 * log(0) = nan.
    if a == 0.0 and b >= 0.0:
        return 0.0
    return out * math.log(a)


def _tie(a: float, b: float, win: float) -> float:
    return 0.5 if a == b else win


def _clamp(a: float, lo: float, hi: float) -> float:
    return min(max(a, lo), hi)  # torch.clamp: with lo > hi every value becomes hi


def one(*_: float) -> float:
    """The local derivative 1: an engine that sees it may pass the upstream gradient on unmultiplied
    (g · 1.0 is g for every float), as backtrace.Value's backward does."""
    return 1.0


ROWS = (
    Op(name="add", forward=operator.add, derivs=(one, one), rules=("1", "1"), symbol="+",
       kind=INFIX, precedence=10, dunder="add", torch="torch.add", doc="sum"),
    Op(name="sub", forward=operator.sub, derivs=(one, lambda a, b, o: -1.0), rules=("1", "-1"),
       symbol="-", kind=INFIX, precedence=10, dunder="sub", torch="torch.sub", doc="difference"),
    Op(name="mul", forward=operator.mul, derivs=(lambda a, b, o: b, lambda a, b, o: a),
       rules=("{b}", "{a}"), symbol="*", kind=INFIX, precedence=20, dunder="mul",
       torch="torch.mul", doc="product"),
    Op(name="div", forward=operator.truediv,
       derivs=(lambda a, b, o: 1.0 / b, lambda a, b, o: -a / (b * b)),
       rules=("1/{b}", "-{a}/{b}**2"), symbol="/", kind=INFIX, precedence=20, dunder="truediv",
       torch="torch.div", doc="quotient"),
    Op(name="neg", forward=operator.neg, derivs=(lambda a, o: -1.0,), rules=("-1",), symbol="-",
       kind=PREFIX, precedence=30, dunder="neg", torch="torch.neg", doc="negation"),
    Op(name="pow", forward=math.pow, derivs=(_pow_da, _pow_db),
       rules=("{b}*{a}**({b}-1)", "{a}**{b}*log({a})"), symbol="**", kind=INFIX, precedence=40,
       right_assoc=True, dunder="pow", spellings=("pow",), torch="torch.pow",
       doc="power, right-associative; also pow(a, b)"),
    Op(name="exp", forward=math.exp, derivs=(lambda a, o: o,), rules=("exp({a})",),
       torch="torch.exp", doc="e to the a"),
    Op(name="log", forward=math.log, derivs=(lambda a, o: 1.0 / a,), rules=("1/{a}",),
       torch="torch.log", doc="natural logarithm"),
    Op(name="sqrt", forward=math.sqrt, derivs=(lambda a, o: 0.5 / o,), rules=("1/(2*sqrt({a}))",),
       torch="torch.sqrt", doc="square root"),
    Op(name="sin", forward=math.sin, derivs=(lambda a, o: math.cos(a),), rules=("cos({a})",),
       torch="torch.sin", doc="sine"),
    Op(name="cos", forward=math.cos, derivs=(lambda a, o: -math.sin(a),), rules=("-sin({a})",),
       torch="torch.cos", doc="cosine"),
    Op(name="tanh", forward=math.tanh, derivs=(lambda a, o: 1.0 - o * o,),
       rules=("1 - tanh({a})**2",), torch="torch.tanh", doc="hyperbolic tangent"),
    Op(name="sigmoid", forward=_sigmoid, derivs=(lambda a, o: o * (1.0 - o),),
       rules=("sigmoid({a})*(1 - sigmoid({a}))",), torch="torch.sigmoid",
       doc="logistic 1/(1+exp(-a))"),
    Op(name="relu", forward=lambda a: a if a > 0.0 else 0.0,
       derivs=(lambda a, o: 1.0 if a > 0.0 else 0.0,), rules=("1 if {a} > 0 else 0",),
       torch="torch.nn.functional.relu", doc="max(a, 0)"),
    Op(name="abs", forward=abs, derivs=(lambda a, o: float((a > 0.0) - (a < 0.0)),),
       rules=("sign({a})",), torch="torch.abs", doc="absolute value"),
    Op(name="max", forward=lambda a, b: a if a >= b else b,
       derivs=(lambda a, b, o: _tie(a, b, float(a > b)), lambda a, b, o: _tie(a, b, float(b > a))),
       rules=("1 if {a} > {b} else 0 (1/2 on a tie)", "1 if {b} > {a} else 0 (1/2 on a tie)"),
       torch="torch.maximum", doc="larger of two"),
    Op(name="min", forward=lambda a, b: a if a <= b else b,
       derivs=(lambda a, b, o: _tie(a, b, float(a < b)), lambda a, b, o: _tie(a, b, float(b < a))),
       rules=("1 if {a} < {b} else 0 (1/2 on a tie)", "1 if {b} < {a} else 0 (1/2 on a tie)"),
       torch="torch.minimum", doc="smaller of two"),
    Op(name="clamp", forward=_clamp,
       derivs=(lambda a, lo, hi, o: float(lo <= a <= hi),
               lambda a, lo, hi, o: float(a < lo < hi),
               lambda a, lo, hi, o: float(a > hi or hi < lo)),
       rules=("1 if {b} <= {a} <= {c} else 0", "1 if {a} < {b} < {c} else 0",
              "1 if {a} > {c} or {c} < {b} else 0"),
       torch="torch.clamp", doc="a limited to [b, c] (c wins when b > c)"),
    # Tensor-only rows: their forward and vector-Jacobian products live in backtrace.tensor_ops.
    Op(name="matmul", tensor=tensor_ops.MATMUL, symbol="@", kind=INFIX, precedence=20,
       torch="torch.matmul", doc="matrix product: vector·matrix, matrix·matrix, matrix·vector"),
    Op(name="sum", tensor=tensor_ops.SUM, params=(("dim", None),), torch="torch.sum",
       doc="sum of every element; sum(a, k) along axis k"),
    Op(name="mean", tensor=tensor_ops.MEAN, params=(("dim", None),), torch="torch.mean",
       doc="mean of every element; mean(a, k) along axis k"),
    Op(name="transpose", tensor=tensor_ops.TRANSPOSE, torch="torch.t",
       doc="rows become columns (aᵀ)"),
    Op(name="softmax", tensor=tensor_ops.SOFTMAX, torch="torch.softmax", torch_kwargs=(("dim", -1),),
       doc="exp(a) / sum(exp(a)) along the last axis"),
    Op(name="log_softmax", tensor=tensor_ops.LOG_SOFTMAX, torch="torch.log_softmax",
       torch_kwargs=(("dim", -1),), doc="log(softmax(a)), computed stably"),
    Op(name="cross_entropy", tensor=tensor_ops.CROSS_ENTROPY,
       torch="backtrace.torchops.cross_entropy",
       doc="-log softmax(a)[b]: b a class index (or one per row) or probabilities like a"),
    Op(name="mse", tensor=tensor_ops.MSE, torch="torch.nn.functional.mse_loss",
       doc="mean((a - b)**2)"),
    Op(name="broadcast", tensor=tensor_ops.BROADCAST, params=(("size", None),),
       torch="torch.broadcast_to", internal=True,
       doc="a copied along new axes (inserted where an elementwise op broadcasts an input)"),
)

OPS: dict[str, Op] = {op.name: op for op in ROWS}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

# How the parser finds ops: infix and prefix by symbol, calls by name (and their other spellings).
INFIX_OPS = {op.symbol: op for op in ROWS if op.kind == INFIX}
PREFIX_OPS = {op.symbol: op for op in ROWS if op.kind == PREFIX}
FUNCTIONS = {op.name: op for op in ROWS if op.kind == CALL and not op.internal} | {
    name: op for op in ROWS for name in op.spellings}
