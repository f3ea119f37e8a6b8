"""Tensor formulas end to end: the lecture's network against torch, values from the command line and
from Python, shape and size errors, JSON, and the formula-language fixes found along the way."""
from __future__ import annotations

import json
import random
import re

import pytest
from click.testing import CliRunner

import backtrace
from backtrace.cli import cli
from backtrace.compare import compare
from backtrace.crosscheck import crosscheck
from backtrace.errors import LimitError, MissingValueError, UsageError
from backtrace.shapes import ShapeError
from backtrace.literals import parse_literal
from backtrace.tensor import MAX_ELEMENTS

torch = pytest.importorskip("torch")

NETWORK = "h = relu(x @ W1 + b1); z = h @ W2 + b2; L = cross_entropy(z, y)"
VALUES = {
    "x": [1.4, 2.7, 1.9],
    "W1": [[0.2, -0.5, 0.1, 0.4], [-0.3, 0.8, 0.2, -0.1], [0.5, 0.1, -0.6, 0.3]],
    "b1": [0.1, 0.0, -0.1, 0.2],
    "W2": [[0.3, -0.2, 0.1], [-0.4, 0.5, 0.2], [0.6, -0.1, -0.3], [0.2, 0.3, -0.5]],
    "b2": [0.0, 0.1, -0.1],
    "y": 0,
}


def run_cli(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def _torch_network():
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in VALUES.items() if k != "y"}
    a1 = t["x"] @ t["W1"] + t["b1"]
    h = torch.relu(a1)
    z = h @ t["W2"] + t["b2"]
    for v in (a1, h, z):
        v.retain_grad()
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(0))
    loss.backward()
    return t, {"%1": a1, "h": h, "z": z}, loss


def close(ours, theirs):
    return torch.allclose(torch.tensor(ours, dtype=torch.float64), theirs.detach(), rtol=1e-12,
                          atol=1e-12)


def test_the_lecture_network_value_and_every_gradient_equal_torch():
    t = backtrace.explain(NETWORK, **VALUES)
    leaves, inner, loss = _torch_network()
    assert abs(t.value - loss.item()) < 1e-12
    for name, tensor in leaves.items():
        assert close(t.grads[name], tensor.grad), name
    for name, tensor in inner.items():
        assert close(t.node(name).value, tensor), name
        assert close(t.node(name).grad, tensor.grad), name
    assert t.grads["y"] is None  # a class index
    # the course's rules, as numbers: ∂L/∂z = softmax(z) − onehot(y), ∂L/∂W2 = hᵀ · ∂L/∂z
    p = torch.softmax(inner["z"], dim=0)
    assert close(t.node("z").grad, p - torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert close(t.grads["W2"], torch.outer(inner["h"], inner["z"].grad))


def test_both_engines_agree_element_by_element_and_a_wrong_number_is_named():
    result = crosscheck(NETWORK, VALUES)
    (verdict,) = result.verdicts
    assert verdict.agree and verdict.max_abs_diff < 1e-15
    assert [s.node for s in result.torch.steps] == [s.node for s in result.reference.steps]
    wrong = json.loads(result.torch.to_json())
    wrong["nodes"][1]["grad"][2][1] += 1e-6  # W1's gradient, one element
    verdict = compare(result.reference, backtrace.Trace.from_dict(wrong))
    assert not verdict.agree and verdict.first.node == "W1" and verdict.first.what == "gradient"


def test_python_values_numbers_lists_tuples_and_torch_tensors():
    as_torch = {k: torch.tensor(v, dtype=torch.float32) for k, v in VALUES.items()}
    as_tuples = {k: tuple(map(tuple, v)) if isinstance(v, list) and isinstance(v[0], list) else v
                 for k, v in VALUES.items()}
    reference = backtrace.explain(NETWORK, **VALUES)
    for values in (as_torch, as_tuples):
        t = backtrace.explain(NETWORK, **values)
        assert compare(reference, t, rtol=1e-6, atol=1e-7).agree
    assert isinstance(reference.grads["W1"], list) and isinstance(reference.grads["W1"][0][0], float)


def test_json_carries_tensors_as_nested_lists():
    t = backtrace.explain(NETWORK, **VALUES)
    data = json.loads(t.to_json())
    assert data["grads"]["W1"] == t.grads["W1"] and len(data["grads"]["W1"]) == 3
    assert data["nodes"][0]["value"] == [1.4, 2.7, 1.9]
    assert backtrace.Trace.from_json(t.to_json()) == t


@pytest.mark.parametrize("formula,values,message", [
    ("h = x @ W", {"x": [1.0, 2.0, 3.0], "W": [[1.0] * 4] * 4},
     "shape error at h = x @ W: x is [3], W is [4×4]; @ needs the last axis of x (3) to equal the "
     "first axis of W (4)"),
    ("f = sum(X + b)", {"X": [[1.0, 2.0, 3.0]] * 2, "b": [1.0, 2.0]},
     "shape error at %0 = X + b: X is [2×3], b is [2]; elementwise ops need shapes that broadcast"),
    ("f = x * 2", {"x": [1.0, 2.0]}, "the output f is [2], not one number"),
    ("L = cross_entropy(z, y)", {"z": [1.0, 2.0], "y": [[1.0, 0.0]]},
     "shape error at L = cross_entropy(z, y): z is [2], y is [1×2]; cross_entropy needs y"),
    ("f = mean(x, 2)", {"x": [[1.0, 2.0]]}, "axis 2 does not exist in x (it has 2 axes)"),
])
def test_shape_errors_are_one_line_naming_the_node_and_the_shapes(formula, values, message):
    with pytest.raises(ShapeError) as err:
        backtrace.explain(formula, **values)
    assert message in str(err.value) and "\n" not in str(err.value)
    result = run_cli("explain", formula, *[f"{k}={json.dumps(v)}" for k, v in values.items()])
    assert result.exit_code == 1 and result.output.startswith("error: shape error") or \
        result.output.startswith("error: the output")


def test_a_bad_class_index_and_an_element_outside_the_domain_are_named():
    with pytest.raises(backtrace.DomainError, match=r"y = 3 is not a class index of z \(a whole "
                                                     r"number from 0 to 1\)"):
        backtrace.explain("L = cross_entropy(z, y)", z=[1.0, 2.0], y=3)
    with pytest.raises(backtrace.DomainError, match=r"value of %0 = log\(x\) at element \[1\] "
                                                     r"with x = -2: outside the domain of log"):
        backtrace.explain("f = sum(log(x))", x=[1.0, -2.0])


def test_tensors_past_the_limit_are_refused_in_one_line():
    with pytest.raises(LimitError, match=f"at most {MAX_ELEMENTS:,} per tensor"):
        backtrace.explain("f = sum(x)", x=[0.0] * (MAX_ELEMENTS + 1))
    with pytest.raises(LimitError, match=r"%0 = x @ y would have 12,100 elements \[110×110\]"):
        backtrace.explain("f = sum(x @ y)", x=[[1.0]] * 110, y=[[1.0] * 110])
    result = run_cli("explain", "f = sum(x)", "--x", "randn(101, 100)")
    assert result.exit_code == 2 and "10,100 elements" in result.output


def test_literals_are_data_never_evaluated():
    rng = random.Random(0)
    assert parse_literal("[1.4, 2.7, 1.9]", "x", rng) == [1.4, 2.7, 1.9]
    assert parse_literal(" [[1, 2], [3, -4e-1]] ", "x", rng) == [[1.0, 2.0], [3.0, -0.4]]
    assert parse_literal("zeros(2, 1)", "x", rng) == [[0.0], [0.0]]
    first = parse_literal("randn(3, 4)", "W", random.Random(5))
    assert first == parse_literal("randn(3,4)", "W", random.Random(5)) != \
        parse_literal("randn(3, 4)", "W", random.Random(6))
    for bad, why in [("__import__('os')", "must be a number, a list"), ("[1, [2]]", "rectangular"),
                     ("[1, 2", "expected ',' or ']' in the list"), ("[]", "unexpected ']'"),
                     ("[1e400]", "finite"), ("randn(3, -1)", "positive whole sizes"),
                     ("[1, 2] + 1", "must be a number, a list"), ("[1, 2] 3", "unexpected '3'"),
                     ("[" * 12 + "1" + "]" * 12, "more than 8 dimensions")]:
        with pytest.raises(MissingValueError, match=re.escape(why)):
            parse_literal(bad, "x", rng)


def test_command_line_tensors_seed_and_formula_files(tmp_path):
    args = ["--x", "[1.4, 2.7, 1.9]", "--W1", "randn(3, 4)", "--b1", "zeros(4)", "--W2",
            "randn(4, 3)", "--b2", "zeros(3)", "--y", "0", "--format", "json", "--engine",
            "reference"]
    one = json.loads(run_cli("explain", NETWORK, *args).output)
    again = json.loads(run_cli("explain", NETWORK, *args, "--seed", "0").output)
    other = json.loads(run_cli("explain", NETWORK, *args, "--seed", "1").output)
    assert one["grads"] == again["grads"] != other["grads"]
    path = tmp_path / "network.txt"
    path.write_text(NETWORK.replace("; ", "\n"), encoding="utf-8")
    from_file = json.loads(run_cli("explain", "-f", str(path), *args).output)
    from_stdin = json.loads(run_cli("explain", "-f", "-", *args, input=path.read_text()).output)
    assert from_file["grads"] == from_stdin["grads"] == one["grads"]
    missing = run_cli("explain", "-f", str(tmp_path / "nope.txt"), "--x", "1")
    assert missing.exit_code == 1 and missing.output.startswith("error: cannot read the formula")
    both = run_cli("explain", "-f", str(path))
    assert both.exit_code == 2 and "no value for input x" in both.output
    assert run_cli("explain").exit_code == 2
    word = run_cli("explain", "f = x * 2", "--x", "one")
    assert word.exit_code == 2 and "must be a number, got 'one'" in word.output


def test_the_explain_view_fits_the_terminal():
    from tests.conftest import render_text
    from backtrace.render.formats import view

    t = backtrace.explain(NETWORK, **VALUES)
    wide = render_text(view(t, "plain"), 100)
    assert "[[ 0.2, -0.5,  0.1,  0.4],\n" in wide  # W1 as a matrix
    assert "∂L/∂W1 [3×4] = xᵀ [3×1] · ∂L/∂%0 [1×4]" in wide
    for width in (60, 80):
        text = render_text(view(t, "table"), width)
        assert max(map(len, text.splitlines())) <= width
    big = backtrace.explain("f = sum(W @ v)", W=[[0.5] * 20] * 20, v=[1.0] * 20)
    text = render_text(view(big, "plain"), 100)
    assert "[20×20] ‖·‖=10 min 0.5 max 0.5" in text  # summarised: shape, norm, min, max
    markdown = render_text(view(t, "markdown"), 140)
    row = next(line for line in markdown.splitlines() if line.startswith("| W1 "))
    assert "[[0.2, -0.5, 0.1, 0.4], [-0.3, 0.8, 0.2, -0.1], [0.5, 0.1, -0.6, 0.3]]" in row
    assert all(line.startswith("|") for line in markdown.splitlines() if "│" in line or "| " in line)


# ---------------------------------------------------------------- formula language fixes

def test_an_assigned_name_hides_a_constant_and_giving_the_constant_says_how_to_rename():
    t = backtrace.explain("c = x * 2; d = x + 1; e = c - d; f = e * e", x=3.0)
    assert t.value == 4.0 and t.grads == {"x": 4.0}  # e = x - 1: f = (x - 1)², f' = 2(x - 1)
    with pytest.raises(UsageError, match=r"'e' is the constant e = 2.71828 in this formula, not an "
                                         r"input: rename your variable \(e.g. e1\)"):
        backtrace.explain("f = e * x", x=1.0, e=2.0)
    result = run_cli("explain", "f = e * x", "--x", "1", "--e", "2")
    assert result.exit_code == 2 and "rename your variable" in result.output


@pytest.mark.parametrize("name", ["limits", "formula", "values", "self"])
def test_any_variable_name_works_from_python(name):
    assert backtrace.explain(f"f = {name} * 2", **{name: 2}).grads == {name: 2.0}
    from backtrace import torch_engine

    assert torch_engine.explain(f"f = {name} * 2", **{name: 2}).grads == {name: 2.0}


def test_limits_still_go_second_and_huge_integers_are_one_line():
    from backtrace import Limits

    with pytest.raises(LimitError):
        backtrace.explain("f = x + x + x", Limits(max_nodes=2), x=1.0)
    with pytest.raises(MissingValueError, match="value of x is too large for a float"):
        backtrace.explain("f = x * 2", x=10**400)
    with pytest.raises(MissingValueError, match="too large for a float"):
        backtrace.explain("f = sum(x)", x=[1.0, 10**400])


def test_backtrace_math_tensor_functions_call_torch():
    import backtrace.math as bm

    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    assert bm.sum(t).item() == 10.0 and bm.mean(t, 0).tolist() == [2.0, 3.0]
    assert torch.allclose(bm.softmax(t), torch.softmax(t, dim=-1))
    with pytest.raises(TypeError, match="write it in a formula"):
        bm.sum(2.0)


def test_finite_differences_check_tensor_formulas_element_by_element(monkeypatch):
    result = crosscheck(NETWORK, VALUES, engine="reference", check="numeric")
    (verdict,) = result.verdicts
    assert verdict.agree and verdict.compared >= 8 and "element by element" in verdict.note
    # a wrong rule is caught at its node: ∂/∂b of a sum reported twice too large
    from backtrace import tensor_ops
    from backtrace.ops import OPS

    rule = OPS["add"].tensor_rule
    doubled = rule.vjps[1]

    def wrong(g, ins, out, params):
        local, c = doubled(g, ins, out, params)
        return local, tensor_ops.Tensor(c.shape, [2 * x for x in c.data])

    monkeypatch.setitem(rule.__dict__, "vjps", (rule.vjps[0], wrong))  # the rule is frozen
    (verdict,) = crosscheck(NETWORK, VALUES, engine="reference", check="numeric").verdicts
    assert not verdict.agree and verdict.first.node == "b2" and verdict.first.what == "gradient"
