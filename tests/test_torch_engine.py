"""The torch engine against the reference engine: same ids, same numbers, on the textbook formulas
and on every op of the op table (smooth points and kinks)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backtrace import torch_engine  # noqa: E402
from backtrace.compare import compare  # noqa: E402
from backtrace.engine import run  # noqa: E402
from backtrace.errors import DomainError  # noqa: E402
from backtrace.ops import OPS, operands  # noqa: E402
from backtrace.parser import parse  # noqa: E402
from tests.conftest import NEURON, TEXTBOOK  # noqa: E402
from tests.test_ops import KINKS, POINTS, SCALAR  # noqa: E402


def both(formula: str, values: dict):
    graph = parse(formula)
    return run(graph, values), torch_engine.run(graph, values)


def same_numbers(ref, tor):
    assert [n.id for n in tor.nodes] == [n.id for n in ref.nodes]
    assert [(n.expr, n.kind, n.inputs) for n in tor.nodes] == \
        [(n.expr, n.kind, n.inputs) for n in ref.nodes]
    assert [s.node for s in tor.steps] == [s.node for s in ref.steps]
    for a, b in zip(ref.steps, tor.steps):
        assert b.upstream == pytest.approx(a.upstream, rel=1e-12)
        for ea, eb in zip(a.edges, b.edges):
            assert (eb.input, eb.rule) == (ea.input, ea.rule)
            if ea.contribution is None:
                assert eb.contribution is None and eb.local is None
            else:
                assert eb.local == pytest.approx(ea.local, rel=1e-12, abs=1e-300)
                assert eb.contribution == pytest.approx(ea.contribution, rel=1e-12, abs=1e-300)
    assert compare(ref, tor).agree


def test_textbook_exact():
    ref, tor = both(*TEXTBOOK)
    assert tor.engine == "torch" and tor.value == -12.0
    assert tor.grads == {"x": -4.0, "y": -4.0, "z": 3.0}  # hand-derived in the lecture
    same_numbers(ref, tor)
    verdict = compare(ref, tor)
    assert verdict.max_abs_diff == 0.0 and verdict.line() == "engines agree, max |Δ| = 0"


def test_neuron_matches_autograd_directly():
    ref, tor = both(*NEURON)
    same_numbers(ref, tor)
    v = {k: torch.tensor(x, dtype=torch.float64, requires_grad=True) for k, x in NEURON[1].items()}
    f = 1 / (1 + torch.exp(-(v["w0"] * v["x0"] + v["w1"] * v["x1"] + v["w2"])))
    f.backward()
    for k, t in v.items():
        assert tor.grads[k] == t.grad.item()
    assert tor.node(tor.output).meta["torch_type"] == "DivBackward0"


@pytest.mark.parametrize("name,point", [(n, POINTS[n]) for n in SCALAR] + KINKS)
def test_every_op_agrees_with_the_reference_engine(name, point):
    op = OPS[name]
    names = operands(op.arity)
    formula = f"f = {op.expression(*names)}"
    values = dict(zip(names, point))
    if name == "pow" and point[0] < 0:
        with pytest.raises(DomainError):  # log of a negative base: both engines refuse
            torch_engine.run(parse(formula), values)
        return
    ref, tor = both(formula, values)
    same_numbers(ref, tor)


def test_constants_fan_out_and_unreachable_inputs():
    ref, tor = both("q = x * 2; r = q * q + x; s = y * 3; f = r + exp(1)", {"x": 1.5, "y": 4.0})
    same_numbers(ref, tor)
    assert tor.grads == {"x": 8 * 1.5 + 1, "y": None}  # r = 4x² + x
    assert tor.node("s").grad is None and tor.node("s").value == 12.0


def test_constant_output_and_bare_input():
    ref, tor = both("f = 2 * 3", {})
    assert tor.value == 6.0 and tor.steps == () and ref.grads == tor.grads == {}
    ref, tor = both("f = x", {"x": 2.0})
    assert tor.grads == ref.grads == {"x": 1.0}


def test_domain_errors_name_the_node():
    with pytest.raises(DomainError, match="value of f = log"):
        torch_engine.explain("f = log(x)", x=-1.0)
    with pytest.raises(DomainError, match="gradient of x"):
        torch_engine.explain("f = sqrt(x)", x=0.0)


def test_a_torch_import_only_when_the_engine_runs():
    import subprocess
    import sys

    code = "import backtrace.torch_engine, sys; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


from hypothesis import HealthCheck, assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from backtrace.errors import DomainError as _DomainError  # noqa: E402

_UNARY = [op.name for op in OPS.values() if op.arity == 1 and not op.internal]
_BINARY = [op.name for op in OPS.values() if op.arity == 2]


def _expressions():
    leaves = st.sampled_from(["a", "b", "c", "2", "0.5"])

    def grow(children):
        unary = st.tuples(st.sampled_from(_UNARY), children).map(
            lambda t: OPS[t[0]].expression(f"({t[1]})"))
        binary = st.tuples(st.sampled_from(_BINARY), children, children).map(
            lambda t: OPS[t[0]].expression(f"({t[1]})", f"({t[2]})"))
        return unary | binary

    return st.recursive(leaves, grow, max_leaves=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example("(c) / ((a) * (c))", (3.0730823049768146e-32, 0.0, 2.25))  # cancellation: found by hypothesis
@given(_expressions(), st.tuples(*[st.floats(-3, 3, allow_nan=False)] * 3))
def test_random_formulas_agree_on_both_engines(expr, point):
    """Any formula the reference engine can evaluate, torch evaluates to the same numbers."""
    values = {k: v for k, v in zip("abc", point) if k in expr}
    graph = parse(f"f = {expr}")
    values = {k: v for k, v in values.items() if k in graph.input_names}
    try:
        ref = run(graph, values)
    except _DomainError:
        assume(False)
    tor = torch_engine.run(graph, values)
    # Rounding error is relative to the largest term summed, not to the result: (c)/((a)*(c)) at
    # a = 3e-32 has a true gradient of 0 made of two cancelling terms near 1e31, which each engine
    # rounds its own way. So the absolute tolerance scales with the largest value or contribution.
    terms = [abs(n.value) for n in ref.nodes] + [
        abs(e.contribution) for st_ in ref.steps for e in st_.edges if e.contribution is not None]
    verdict = compare(ref, tor, rtol=1e-9, atol=1e-12 * max(1.0, *terms))
    assert verdict.agree, verdict.line()
