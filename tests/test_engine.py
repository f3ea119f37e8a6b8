"""The reference engine against hand-derived textbook numbers, finite differences and PyTorch."""
from __future__ import annotations

import random

import pytest

from backtrace import explain, parse, run
from backtrace.errors import DomainError, MissingValueError, UsageError
from backtrace.ir import GraphBuilder


def test_lecture_example(textbook):
    t = explain(textbook[0], **textbook[1])
    assert t.value == -12.0
    assert t.grads == {"x": -4.0, "y": -4.0, "z": 3.0}
    assert t.node("%0").value == 3.0  # q = x + y
    assert t.node("%0").grad == -4.0  # ∂f/∂q = z


def test_lecture_example_steps_in_execution_order(textbook):
    t = explain(textbook[0], **textbook[1])
    assert [s.node for s in t.steps] == ["f", "%0"]
    mul, add = t.steps
    assert mul.upstream == 1.0
    assert [(e.input, e.local, e.contribution, e.rule) for e in mul.edges] == [
        ("%0", -4.0, -4.0, "z"), ("z", 3.0, 3.0, "%0")]
    assert add.upstream == -4.0
    assert [(e.input, e.local, e.contribution) for e in add.edges] == [
        ("x", 1.0, -4.0), ("y", 1.0, -4.0)]


def test_sigmoid_neuron(neuron):
    t = explain(neuron[0], **neuron[1])
    g = t.grads
    assert t.value == pytest.approx(0.7310585786300049)
    assert (g["w0"], g["w1"], g["w2"]) == pytest.approx((-0.19661193, -0.39322387, 0.19661193))
    assert (g["x0"], g["x1"]) == pytest.approx((0.39322387, -0.58983580))
    assert (round(g["w0"], 2), round(g["w1"], 2), round(g["w2"], 2)) == (-0.20, -0.39, 0.20)
    assert (round(g["x0"], 2), round(g["x1"], 2)) == (0.39, -0.59)


def test_x_times_x_has_two_edges_and_sums_them():
    t = explain("f = x * x", x=3)
    assert t.grads == {"x": 6.0}
    assert [e.contribution for e in t.steps[0].edges] == [3.0, 3.0]


def test_a_plus_a_counts_twice():
    assert explain("a + a", a=7).grads == {"a": 2.0}


def test_fan_out_through_several_paths_sums_contributions():
    t = explain("a = x * x; b = x + 1; f = a * b", x=3)
    assert t.grads["x"] == 3 * 9 + 2 * 3  # d/dx x^2 (x+1) = 3x^2 + 2x
    contributions = sorted(e.contribution for _, e in t.consumers("x"))
    assert contributions == [9.0, 12.0, 12.0]


def test_constants_get_no_gradient_and_dead_statements_no_steps():
    t = explain("unused = y * 2; f = x * 3", x=1, y=5)
    assert t.grads == {"x": 3.0, "y": None}
    assert t.node("unused").grad is None
    (step,) = t.steps
    assert step.edges[1].contribution is None and "constant" in step.edges[1].note


def test_output_that_is_an_input():
    t = explain("f = x", x=2)
    assert t.grads == {"x": 1.0} and t.steps == () or len(t.steps) == 0


def _random_formula(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(["x", "y", "z", "0.5", "2"])
    kind = rng.random()
    a, b = _random_formula(rng, depth - 1), _random_formula(rng, depth - 1)
    if kind < 0.5:
        return f"({a} {rng.choice('+-*')} {b})"
    if kind < 0.6:
        return f"({a}) / (1.5 + ({b})**2)"
    return f"{rng.choice(['tanh', 'sin', 'cos', 'sigmoid', 'exp'])}(0.3 * ({a}))"


@pytest.mark.parametrize("seed", range(25))
def test_random_formulas_match_torch_autograd(seed):
    torch = pytest.importorskip("torch")
    rng = random.Random(seed)
    formula = _random_formula(rng, 5)
    values = {"x": rng.uniform(-2, 2), "y": rng.uniform(-2, 2), "z": rng.uniform(-2, 2)}
    values = {k: v for k, v in values.items() if k in parse(formula).input_names}
    t = explain(formula, **values)
    env = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in values.items()}
    funcs = {n: getattr(torch, n) for n in ("tanh", "sin", "cos", "sigmoid", "exp")}
    out = _torch_eval(formula, env, funcs)
    used = [k for k in values if k in t.grads]
    if not used:
        return
    grads = torch.autograd.grad(out, [env[k] for k in used], allow_unused=True)
    assert t.value == pytest.approx(out.item(), rel=1e-12, abs=1e-12)
    for k, g in zip(used, grads):
        expected = 0.0 if g is None else g.item()
        assert t.grads[k] == pytest.approx(expected, rel=1e-9, abs=1e-12), formula


def _torch_eval(formula, env, funcs):
    """An oracle for the tests only: Python evaluates the formula over torch tensors."""
    import ast

    tree = ast.parse(formula, mode="eval")
    return _walk(tree.body, env, funcs)


def _walk(node, env, funcs):
    import ast

    if isinstance(node, ast.Constant):
        import torch

        return torch.tensor(float(node.value), dtype=torch.float64)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        return -_walk(node.operand, env, funcs)
    if isinstance(node, ast.Call):
        return funcs[node.func.id](*[_walk(a, env, funcs) for a in node.args])
    a, b = _walk(node.left, env, funcs), _walk(node.right, env, funcs)
    return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
            ast.Div: lambda: a / b, ast.Pow: lambda: a ** b}[type(node.op)]()


def test_gradients_match_central_differences_of_the_whole_formula(neuron):
    formula, values = neuron
    t = explain(formula, **values)
    h = 1e-6
    for name in values:
        up = dict(values, **{name: values[name] + h})
        down = dict(values, **{name: values[name] - h})
        numeric = (explain(formula, **up).value - explain(formula, **down).value) / (2 * h)
        assert t.grads[name] == pytest.approx(numeric, rel=1e-6)


def test_million_node_chain_needs_no_recursion():
    b = GraphBuilder()
    x = b.add("input", name="x")
    node = x
    for _ in range(999_999):  # y_{k+1} = y_k + x: depth a million, x fans out a million times
        node = b.add("add", (node, x))
    t = run(b.build(node), {"x": 0.5})
    assert len(t.nodes) == 1_000_000
    assert t.value == 500_000.0
    assert t.grads["x"] == 1_000_000.0  # sums of 1.0: exact
    assert t.steps[0].upstream == 1.0 and t.steps[-1].upstream == 1.0


@pytest.mark.parametrize("formula,values,words", [
    ("log(x)", {"x": -1}, ["f = log(x)", "x = -1", "domain of log"]),
    ("q = x - x; f = 1 / q", {"x": 2}, ["f = 1 / q", "q = 0", "division by zero"]),
    ("exp(x)", {"x": 1000}, ["f = exp(x)", "overflow"]),
    ("sqrt(x)", {"x": 0}, ["local derivative", "f = sqrt(x)"]),
    ("f = x * 1e308 * 10", {"x": 10}, ["inf", "overflow"]),
])
def test_domain_errors_name_the_node_and_its_inputs(formula, values, words):
    with pytest.raises(DomainError) as err:
        explain(formula, **values)
    for word in words:
        assert word in str(err.value)
    assert err.value.exit_code == 1


def test_missing_extra_and_bad_values():
    with pytest.raises(MissingValueError, match="no value for input y"):
        explain("x * y", x=1)
    with pytest.raises(UsageError, match="'w' is not an input"):
        explain("x * 2", x=1, w=3)
    with pytest.raises(MissingValueError, match="must be a number"):
        explain("x * 2", x="3")
    with pytest.raises(MissingValueError, match="finite"):
        explain("x * 2", x=float("nan"))


def test_an_output_named_like_an_input_does_not_merge_them():
    """`f = x * out; f + 1` once printed ∂f/∂x = 2 through 8 bogus paths (two nodes named out)."""
    t = explain("f = x * out; f + 1", x=3, out=2)
    assert t.output == "out2" and t.value == 7.0 and t.grads == {"x": 2.0, "out": 3.0}


def test_pow_follows_torch_where_the_exponent_is_zero():
    torch = pytest.importorskip("torch")
    for x, y in ((0.0, 0.0), (2.0, 0.0), (0.0, 2.0)):
        t = explain("f = x ** y", x=x, y=y)
        tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        ty = torch.tensor(y, dtype=torch.float64, requires_grad=True)
        (tx ** ty).backward()
        assert t.grads == {"x": tx.grad.item(), "y": ty.grad.item()}
    assert explain("f = x ** 0", x=0).grads == {"x": 0.0}


def test_a_negative_number_is_written_so_it_reads_as_it_computes():
    t = explain("f = (-2) ** 2 * x", x=3)
    (power,) = [n for n in t.nodes if n.op == "pow"]
    assert power.expr == "(-2) ** 2" and power.value == 4.0 and t.value == 12.0
