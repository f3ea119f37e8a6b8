"""The op table: one row per op. Parser, engines, renderers and `backtrace ops` all read it.

Each row holds the op's arity, its forward function on floats, one local-derivative function per
input (called as ``d(*inputs, out)``, returning ∂out/∂input), the same derivatives as text, its
symbol, how it is written (infix, prefix or call) and its precedence. Adding an op is one row.
Derivatives at kinks follow PyTorch (relu'(0) = 0, |x|'(0) = 0, max/min split ties evenly) so the
two engines agree.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

INFIX, PREFIX, CALL = "infix", "prefix", "call"


@dataclass(frozen=True)
class Op:
    """One row of the op table."""

    name: str
    arity: int
    forward: Callable[..., float]
    derivs: tuple[Callable[..., float], ...]  # d(*inputs, out) -> ∂out/∂input, one per input
    rules: tuple[str, ...]  # the same derivatives as text over {a}, {b}, {out}
    symbol: str
    kind: str = CALL
    precedence: int = 100  # binding power; calls and atoms bind tightest
    right_assoc: bool = False
    torch: str = ""  # the torch function the torch engine calls
    doc: str = ""

    def expression(self, *args: str) -> str:
        """How the op is written over already-formatted operands, e.g. ``a * b``."""
        if self.kind == INFIX:
            return f"{args[0]} {self.symbol} {args[1]}"
        if self.kind == PREFIX:
            return f"{self.symbol}{args[0]}"
        return f"{self.symbol}({', '.join(args)})"

    def rule(self, slot: int, *names: str, out: str = "out") -> str:
        """The local derivative of input `slot` as text, over the given operand names."""
        return self.rules[slot].format(**dict(zip("ab", names)), out=out)

    def rule_text(self, slot: int) -> str:
        """The textbook form of a rule, e.g. ``d(a*b)/da = b``."""
        operands = "ab"[: self.arity]
        expr = self.expression(*operands).replace(" ", "")
        return f"d({expr})/d{operands[slot]} = {self.rule(slot, *operands, out=expr)}"


def _sigmoid(a: float) -> float:
    # Two branches so exp never overflows: sigmoid(-1000) is 0, not an OverflowError.
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    ea = math.exp(a)
    return ea / (1.0 + ea)


def _pow_db(a: float, b: float, out: float) -> float:
    # PyTorch masks the base-zero case to 0 rather than 0 * log(0) = nan.
    if a == 0.0 and b >= 0.0:
        return 0.0
    return out * math.log(a)


def _tie(a: float, b: float, win: float) -> float:
    return 0.5 if a == b else win


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("add", 2, operator.add, (lambda a, b, o: 1.0, lambda a, b, o: 1.0), ("1", "1"),
           "+", INFIX, 10, torch="add", doc="sum"),
        Op("sub", 2, operator.sub, (lambda a, b, o: 1.0, lambda a, b, o: -1.0), ("1", "-1"),
           "-", INFIX, 10, torch="sub", doc="difference"),
        Op("mul", 2, operator.mul, (lambda a, b, o: b, lambda a, b, o: a), ("{b}", "{a}"),
           "*", INFIX, 20, torch="mul", doc="product"),
        Op("div", 2, operator.truediv, (lambda a, b, o: 1.0 / b, lambda a, b, o: -a / (b * b)),
           ("1/{b}", "-{a}/{b}**2"), "/", INFIX, 20, torch="div", doc="quotient"),
        Op("neg", 1, operator.neg, (lambda a, o: -1.0,), ("-1",), "-", PREFIX, 30,
           torch="neg", doc="negation"),
        Op("pow", 2, math.pow, (lambda a, b, o: b * math.pow(a, b - 1.0), _pow_db),
           ("{b}*{a}**({b}-1)", "{a}**{b}*log({a})"), "**", INFIX, 40, right_assoc=True,
           torch="pow", doc="power, right-associative; also pow(a, b)"),
        Op("exp", 1, math.exp, (lambda a, o: o,), ("exp({a})",), "exp", torch="exp",
           doc="e to the a"),
        Op("log", 1, math.log, (lambda a, o: 1.0 / a,), ("1/{a}",), "log", torch="log",
           doc="natural logarithm"),
        Op("sqrt", 1, math.sqrt, (lambda a, o: 0.5 / o,), ("1/(2*sqrt({a}))",), "sqrt",
           torch="sqrt", doc="square root"),
        Op("sin", 1, math.sin, (lambda a, o: math.cos(a),), ("cos({a})",), "sin", torch="sin",
           doc="sine"),
        Op("cos", 1, math.cos, (lambda a, o: -math.sin(a),), ("-sin({a})",), "cos",
           torch="cos", doc="cosine"),
        Op("tanh", 1, math.tanh, (lambda a, o: 1.0 - o * o,), ("1 - tanh({a})**2",), "tanh",
           torch="tanh", doc="hyperbolic tangent"),
        Op("sigmoid", 1, _sigmoid, (lambda a, o: o * (1.0 - o),),
           ("sigmoid({a})*(1 - sigmoid({a}))",), "sigmoid", torch="sigmoid",
           doc="logistic 1/(1+exp(-a))"),
        Op("relu", 1, lambda a: a if a > 0.0 else 0.0, (lambda a, o: 1.0 if a > 0.0 else 0.0,),
           ("1 if {a} > 0 else 0",), "relu", torch="relu", doc="max(a, 0)"),
        Op("abs", 1, abs, (lambda a, o: float((a > 0.0) - (a < 0.0)),), ("sign({a})",), "abs",
           torch="abs", doc="absolute value"),
        Op("max", 2, lambda a, b: a if a >= b else b,
           (lambda a, b, o: _tie(a, b, float(a > b)), lambda a, b, o: _tie(a, b, float(b > a))),
           ("1 if {a} > {b} else 0 (1/2 on a tie)", "1 if {b} > {a} else 0 (1/2 on a tie)"),
           "max", torch="maximum", doc="larger of two"),
        Op("min", 2, lambda a, b: a if a <= b else b,
           (lambda a, b, o: _tie(a, b, float(a < b)), lambda a, b, o: _tie(a, b, float(b < a))),
           ("1 if {a} < {b} else 0 (1/2 on a tie)", "1 if {b} < {a} else 0 (1/2 on a tie)"),
           "min", torch="minimum", doc="smaller of two"),
    )
}

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

# How the parser finds ops: infix and prefix by symbol, calls by name (`pow` is both ** and a call).
INFIX_OPS = {op.symbol: op for op in OPS.values() if op.kind == INFIX}
PREFIX_OPS = {op.symbol: op for op in OPS.values() if op.kind == PREFIX}
FUNCTIONS = {op.name: op for op in OPS.values() if op.kind == CALL} | {"pow": OPS["pow"]}
