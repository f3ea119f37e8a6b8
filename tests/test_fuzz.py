"""Fuzzing: random well-formed and malformed formulas and values never escape as anything but a
result or a BacktraceError, and the CLI exits only with 0, 1 or 2.

The default run tries a few hundred examples; a dedicated run tries 10,000:
    BACKTRACE_FUZZ_EXAMPLES=10000 pytest tests/test_fuzz.py
"""
from __future__ import annotations

import math
import os

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backtrace
from backtrace.cli import cli
from backtrace.errors import BacktraceError
from backtrace.ops import FUNCTIONS

EXAMPLES = int(os.environ.get("BACKTRACE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="BACKTRACE_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow])

NAMES = ["x", "y"]
numbers = st.sampled_from(["0", "1", "2", "0.5", "3e2", "1e-3", "1e308", "pi", "e", "10"])


def _compound(children):
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**"]), children).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})")
    unary = st.tuples(st.sampled_from(sorted(n for n, op in FUNCTIONS.items() if op.arity == 1)),
                      children).map(lambda t: f"{t[0]}({t[1]})")
    pair = st.tuples(st.sampled_from(["max", "min", "pow"]), children, children).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})")
    neg = children.map(lambda c: f"-{c}")
    return binary | unary | pair | neg


well_formed = st.recursive(st.sampled_from(NAMES) | numbers, _compound, max_leaves=12)
TOKENS = ["x", "y", "q", "1", "2.5", "1e3", "+", "-", "*", "/", "**", "(", ")", ",", ";", "=", "\n",
          "exp", "log", "sqrt", "max", "pi", "'", ".", "[", "]", "lambda", ":", " ", "__", "@", "9**9"]
malformed = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)
formulas = well_formed | malformed | st.text(max_size=30)
values = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-5, 5)


@FUZZ
@given(formulas, values, values)
def test_api_gives_a_result_or_a_backtrace_error(formula, x, y):
    try:
        inputs = backtrace.parse(formula).input_names
        t = backtrace.explain(formula, **{k: v for k, v in {"x": x, "y": y}.items() if k in inputs})
    except BacktraceError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert math.isfinite(t.value)
    assert all(g is None or math.isfinite(g) for g in t.grads.values())


@settings(FUZZ, max_examples=max(50, EXAMPLES // 5))
@given(formulas, st.floats(-5, 5), st.sampled_from(["plain", "json", "markdown"]))
def test_cli_exit_codes_are_0_1_or_2(formula, x, fmt):
    try:  # give exactly the inputs the formula has, so most examples get past the values check
        names = backtrace.parse(formula).input_names
    except BacktraceError:
        names = ()
    result = CliRunner().invoke(cli, ["explain", formula, *(f"{n}={x}" for n in names),
                                      "--format", fmt])
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code:
        assert result.output.startswith("error: ")
