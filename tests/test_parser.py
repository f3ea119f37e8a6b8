"""The formula language: precedence, names, statements, and one-line errors with columns."""
from __future__ import annotations

import math

import pytest

from backtrace import explain
from backtrace.errors import FormulaSyntaxError, LimitError, UsageError
from backtrace.parser import Limits, parse


def value(formula: str, **values: float) -> float:
    return explain(formula, **values).value


@pytest.mark.parametrize("formula,expected", [
    ("2**3**2", 512.0),  # right-associative
    ("-2**2", -4.0),  # unary minus binds looser than **
    ("2**-1", 0.5),
    ("10-4-3", 3.0),  # left-associative
    ("12/3/2", 2.0),
    ("1+2*3", 7.0),
    ("(1+2)*3", 9.0),
    ("-(-3)", 3.0),
    ("+3 - -2", 5.0),
    ("1e-3 * 1000", 1.0),
    (".5 + 2.", 2.5),
    ("pow(2, 10)", 1024.0),
    ("max(1, 2) + min(1, 2)", 3.0),
    ("2*pi", 2 * math.pi),
    ("log(e)", 1.0),
])
def test_arithmetic_matches_python(formula, expected):
    assert value(formula) == pytest.approx(expected, rel=1e-15)


def test_negative_literal_is_one_constant_node():
    g = parse("f = -2.5 * x")
    assert [n.op for n in g.nodes] == ["const", "input", "mul"]
    assert g.nodes[0].value == -2.5


def test_statements_keep_intermediate_names():
    g = parse("q = x + y; f = q * z")
    assert [n.id for n in g.nodes] == ["x", "y", "q", "z", "f"]
    assert g.input_names == ("x", "y", "z")
    assert g.expression(4) == "q * z"


def test_newlines_separate_statements_and_blank_ones_are_skipped():
    g = parse("\nq = x + y\n\nf = q * z\n")
    assert g.nodes[g.output].id == "f"


def test_bare_expression_is_called_f():
    assert parse("x * y").nodes[-1].id == "f"
    assert parse("f = x; x * 2").nodes[-1].id == "out"  # f is taken


def test_alias_keeps_one_node():
    g = parse("q = x * y; f = q")
    assert g.nodes[g.output].id == "q" and g.aliases == (("f", 2),)


def test_same_input_twice_is_two_edges():
    g = parse("f = x * x")
    assert g.nodes[-1].inputs == (0, 0)


def test_node_ids_are_deterministic():
    a = parse("1/(1+exp(-(w0*x0+w1*x1+w2)))")
    b = parse("1/(1+exp(-(w0*x0+w1*x1+w2)))")
    assert a == b
    assert [n.id for n in a.nodes if not n.named][:3] == ["%0", "%1", "%2"]


@pytest.mark.parametrize("formula,message,column", [
    ("f=(x+y))*z", "unexpected ')'", 7),
    ("f=(x+y", "expected ')'", 6),
    ("2x", "missing operator", 1),
    ("x +", "expected a number", 3),
    ("x ^ 2", "'^' is not a power here", 2),
    ("foo(x)", "unknown function 'foo'", 0),
    ("exp + 1", "'exp' is a function", 0),
    ("exp(1, 2)", "takes 1 argument", 0),
    ("max(a=1, b=2)", "keyword arguments", 5),
    ("x.real", "attribute access", 1),
    ("x[0]", "subscripts", 1),
    ("'a'", "strings are not allowed", 0),
    ("lambda: 1", "'lambda' is not allowed", 0),
    ("__import__", "names starting with '__'", 0),
    ("x // 2", "floor division", 2),
    ("x == 2", "'=' ", None),
    ("q = 1; q = 2", "assigned twice", 7),
    ("f = q; q = 2", "after it is used", 7),
    ("exp = 3", "built-in function", 0),
    ("f = pi * 2; pi = 3", "assigned after it is used as the constant pi", 12),
    ("x $ y", "unexpected character '$'", 2),
])
def test_syntax_errors_name_the_problem_and_column(formula, message, column):
    with pytest.raises(FormulaSyntaxError) as err:
        parse(formula)
    assert message in str(err.value)
    if column is not None:
        assert err.value.column == column
        caret_line = err.value.caret().splitlines()[1]
        assert caret_line.index("^") - 2 == column - formula.rfind("\n", 0, column) - 1
    assert err.value.exit_code == 2


def test_empty_formula():
    with pytest.raises(FormulaSyntaxError, match="empty"):
        parse(" ; \n ")


def test_limits_answer_quickly_with_clear_errors():
    with pytest.raises(LimitError, match="nested"):
        parse("(" * 100_000 + "x" + ")" * 100_000, Limits(max_length=300_000))
    with pytest.raises(LimitError, match="characters long"):
        parse("x+" * 60_000 + "x")
    with pytest.raises(LimitError, match="nodes"):
        parse("+".join(["x"] * 200), Limits(max_nodes=100))
    with pytest.raises(LimitError, match="statements"):
        parse(";".join(f"a{i} = 1" for i in range(20)), Limits(max_statements=10))
    with pytest.raises(LimitError, match="too large"):
        parse("1e999999 * x")
    assert isinstance(LimitError("x"), UsageError)


def test_exponent_tower_is_an_overflow_not_a_hang():
    from backtrace.errors import DomainError

    with pytest.raises(DomainError, match="overflow"):
        explain("9**9**9**9")
