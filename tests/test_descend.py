"""Gradient descent on formulas: the update rule by hand, verdicts, local minima, the CLI."""
from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from backtrace.cli import cli
from backtrace.errors import MissingValueError, UsageError
from backtrace.training import descend, judge

QUADRATIC = "L = (w - 3)**2"  # dL/dw = 2(w - 3): w_k = 3 - 3(1 - 2·lr)^k from w = 0


def run_cli(*args):
    return CliRunner().invoke(cli, list(args))


def test_sgd_is_w_minus_lr_times_gradient():
    d = descend(QUADRATIC, {"w": 0.0}, lr=0.1, steps=5)
    w = 0.0
    for s in d.steps:
        g = 2 * (w - 3)
        assert s.grads["w"] == g and s.updates["w"].delta == -0.1 * g
        w = w - 0.1 * g
        assert s.after["w"] == w and s.loss == (w - 3) ** 2
    # the closed form of the whole trajectory
    assert math.isclose(d.final["w"], 3 - 3 * 0.8**5, rel_tol=1e-14)


@pytest.mark.parametrize("lr,kind,step", [(0.0001, "too slow", None), (0.01, "converged", None),
                                          (10, "diverged", 1)])
def test_the_three_learning_rate_verdicts(lr, kind, step):
    """The lecture's 0.0001 / 0.01 / 10 on a quadratic: takes forever, converges, blows up."""
    d = descend(QUADRATIC, {"w": 0.0}, lr=lr, steps=300)
    assert d.verdict.kind == kind, d.verdict
    if step is not None:
        assert d.verdict.step == step  # w_1 = 0 - 10·(-6) = 60: loss 3249, above the start (9)
        assert d.losses[1] == (60 - 3) ** 2
        assert str(d.verdict) == "diverged (at step 1)"
    if kind == "converged":
        assert abs(d.final["w"] - 3) < 0.01
        assert str(d.verdict).startswith("converged (by step ")
    if kind == "too slow":
        assert abs(d.final["w"] - 3 + 3 * (1 - 0.0002) ** 300) < 1e-9


def test_overflow_is_divergence_at_the_first_rising_step():
    d = descend(QUADRATIC, {"w": 0.0}, lr=10, steps=500)
    assert d.verdict.kind == "diverged" and d.verdict.step == 1
    assert len(d.steps) < 500 and math.isnan(d.steps[-1].loss)  # stopped at the overflow
    assert "overflow" in d.verdict.reason


def test_judge_on_hand_made_curves():
    assert judge([4, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1], [4, 2, 1e-3, 0, 0, 0, 0, 0, 0, 0, 0]).kind == \
        "converged"
    assert judge([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [1] * 11).kind == "too slow"
    assert judge([1, 1, 1], [2, 2, 2]).reason == "the loss did not go down"
    v = judge([1, 0.5, 2, 3], [1, 1, 1, 1])
    assert (v.kind, v.step) == ("diverged", 2)
    assert judge([1, 2, 0.5], [1, 1, 1], failure=(3, "overflow")).step == 1


def test_starting_at_the_minimum_converges_at_once():
    d = descend(QUADRATIC, {"w": 3.0}, lr=0.1, steps=3)
    assert str(d.verdict) == "converged (by step 0)"


def test_starts_end_in_different_minima():
    """L = x⁴ - 3x² + x has a global minimum near -1.30 and a local one near 1.13 (roots of L')."""
    import numpy as np

    roots = sorted(r.real for r in np.roots([4, 0, -6, 1]) if abs(r.imag) < 1e-12)
    global_min, local_min = roots[0], roots[2]
    ends = {x0: descend("L = x**4 - 3*x**2 + x", {"x": x0}, lr=0.01, steps=400).final["x"]
            for x0 in (-2, 3)}
    assert abs(ends[-2] - global_min) < 1e-6 and abs(ends[3] - local_min) < 1e-6


def test_fixed_inputs_stay_constant():
    d = descend("L = (w*x - y)**2", {"w": 0.0}, fixed={"x": 2.0, "y": 6.0}, lr=0.05, steps=60)
    assert set(d.final) == {"w"} and abs(d.final["w"] - 3) < 1e-6


@pytest.mark.parametrize("start,fixed,error,text", [
    ({"w": 0}, {}, MissingValueError, "--fix x=1"),
    ({}, {"w": 0, "x": 1}, UsageError, "nothing to optimize"),
    ({"w": 0, "q": 1}, {"x": 1}, UsageError, "'q' is not an input"),
    ({"w": 0, "x": 1}, {"x": 1}, UsageError, "both optimized and fixed"),
])
def test_input_errors(start, fixed, error, text):
    with pytest.raises(error, match=text):
        descend("L = w*x", start, fixed)


def test_cli_step_table_and_verdict():
    r = run_cli("descend", QUADRATIC, "--w", "0", "--steps", "3")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "Gradient descent on L = (w - 3)**2 with sgd, lr 0.1, 3 steps"
    row = next(line.split() for line in lines if line.split()[:2] == ["2", "w"])
    # step 2: w = 0.6, dL/dw = -4.8, update +0.48, new w = 1.08, loss (1.08-3)^2 = 3.6864
    assert row == ["2", "w", "0.6", "-4.8", "0.48", "1.08", "3.6864"]
    assert "loss" in r.output and " |*" in r.output  # the text loss curve
    assert lines[-1].startswith("Result: w = 1.464, loss 2.3593: too slow")


def test_cli_adam_columns():
    r = run_cli("descend", QUADRATIC, "--w", "0", "--steps", "2", "--optimizer", "adam")
    assert r.exit_code == 0, r.output
    head = next(line.split() for line in r.output.splitlines() if line.lstrip().startswith("step"))
    assert head == ["step", "var", "value", "gradient", "m̂", "v̂", "lr·m̂/(√v̂+ε)", "update",
                    "new", "value", "loss"]
    row = next(line.split() for line in r.output.splitlines() if line.split()[:2] == ["1", "w"])
    # first Adam step: m̂ = g, v̂ = g², step = lr·g/(|g|+ε) ≈ -0.1
    assert row[2:6] == ["0", "-6", "-6", "36"] and float(row[6]) == pytest.approx(-0.1, rel=1e-8)


def test_cli_compare_lr_prints_the_three_verdicts(tmp_path):
    chart = tmp_path / "lr.svg"
    r = run_cli("descend", QUADRATIC, "--w", "0", "--steps", "300",
                "--compare-lr", "0.0001,0.01,10", "--plot", str(chart))
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.output.splitlines()
            if line.startswith("lr=") and "w = 0" in line}
    assert "too slow" in rows["lr=0.0001"] and "converged" in rows["lr=0.01"]
    assert "diverged (at step 1)" in rows["lr=10"]
    assert chart.read_bytes().lstrip().startswith(b"<?xml")


def test_cli_compare_optimizers_and_starts():
    r = run_cli("descend", "L = x**4 - 3*x**2 + x", "--x", "0", "--lr", "0.01", "--steps", "400",
                "--starts", "-2,3")
    assert r.exit_code == 0, r.output
    ends = [line.split() for line in r.output.splitlines() if line.startswith("x=")]
    assert [e[0] for e in ends if "converged" in " ".join(e)] == ["x=-2", "x=3"]
    r = run_cli("descend", QUADRATIC, "--w", "0", "--compare", "sgd,momentum,adam")
    assert r.exit_code == 0 and "Comparing optimizers" in r.output
    assert [line.split()[0] for line in r.output.splitlines()
            if line.split()[:1] in (["sgd"], ["momentum"], ["adam"])] == ["sgd", "momentum", "adam"]


def test_cli_fix_and_schedule():
    r = run_cli("descend", "L = (w*x - y)**2", "--w", "0", "--x", "2", "--fix", "x", "--fix", "y=6",
                "--steps", "4", "--schedule", "step")
    assert r.exit_code == 0, r.output
    assert "(x = 2, y = 6 fixed)" in r.output and "step schedule" in r.output
    # step decay over 4 steps halves the rate after every step: 0.1, 0.05, 0.025, 0.0125
    lrs = [line.split()[1] for line in r.output.splitlines()
           if line.split()[:1] in (["1"], ["2"], ["3"], ["4"])]
    assert lrs == ["0.1", "0.05", "0.025", "0.0125"]


@pytest.mark.parametrize("args,code,message", [
    (["L = w*x", "--w", "0"], 2, "no value for input x"),
    (["L = w", "--w", "0", "--fix", "q"], 2, "--fix q needs a value"),
    (["L = w", "--w", "0", "--plot", "chart.gif"], 2, "chart format"),
    (["L = w", "--w", "0", "--starts", "1,a"], 2, "comma-separated"),
    (["L = w + v", "--w", "0", "--v", "1", "--starts", "1,2"], 2, "exactly one optimized"),
    (["L = w", "--w", "0", "--compare", "sgd,rmsprop"], 2, "--compare takes"),
    (["L = w", "--w", "0", "--compare", "sgd", "--starts", "1"], 2, "one of"),
    (["L = log(w)", "--w", "-1"], 1, "cannot compute"),
])
def test_cli_errors_are_one_line(args, code, message):
    r = run_cli("descend", *args)
    assert r.exit_code == code, r.output
    assert message in r.output and "Traceback" not in r.output


# ---------------------------------------------------------------- tensor formulas

LINEAR_REGRESSION = "L = mean((x @ W + b - t)**2)"  # the lecture's LinearRegression, section 9.1
FEATURES = [[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [-2.0, 1.5]]
LABELS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]]
W0, B0 = [[0.3, -0.2], [0.1, 0.4]], [0.05, -0.1]


def test_linear_regression_equals_the_lectures_torch_loop():
    """model.w -= 0.001 * model.w.grad; model.w.grad.zero_(), in float64, to 1e-12."""
    torch = pytest.importorskip("torch")
    lr, n = 0.01, 40
    d = descend(LINEAR_REGRESSION, {"W": W0, "b": B0}, {"x": FEATURES, "t": LABELS}, lr=lr, steps=n)
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    x, t = (torch.tensor(v, dtype=torch.float64) for v in (FEATURES, LABELS))
    for k, s in enumerate(d.steps):
        loss = torch.mean((x @ w + b - t) ** 2)
        loss.backward()
        assert abs((d.start_loss if k == 0 else d.steps[k - 1].loss) - loss.item()) < 1e-12
        grads = s.grads
        assert max(abs(grads[f"W[{i},{j}]"] - w.grad[i, j].item()) for i in range(2)
                   for j in range(2)) < 1e-12
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
        final = d.tensors(s.after)
        assert torch.allclose(torch.tensor(final["W"], dtype=torch.float64), w, rtol=0, atol=1e-12)
        assert torch.allclose(torch.tensor(final["b"], dtype=torch.float64), b, rtol=0, atol=1e-12)
    assert d.verdict.kind in ("converged", "too slow") and d.final_loss < d.start_loss


def test_tensor_adam_equals_torch_optim():
    torch = pytest.importorskip("torch")
    d = descend(LINEAR_REGRESSION, {"W": W0, "b": B0}, {"x": FEATURES, "t": LABELS}, lr=0.05,
                steps=25, optimizer="adam")
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(B0, dtype=torch.float64, requires_grad=True)
    x, t = (torch.tensor(v, dtype=torch.float64) for v in (FEATURES, LABELS))
    opt = torch.optim.Adam([w, b], lr=0.05)
    for _ in d.steps:
        opt.zero_grad()
        torch.mean((x @ w + b - t) ** 2).backward()
        opt.step()
    final = d.tensors(d.final)
    assert torch.allclose(torch.tensor(final["W"], dtype=torch.float64), w, rtol=0, atol=1e-12)


def test_tensor_descend_on_the_command_line_shows_each_element_and_summarises_big_ones():
    out = run_cli("descend", LINEAR_REGRESSION, "--x", str(FEATURES), "--t", str(LABELS),
                  "--W", str(W0), "--b", str(B0), "--fix", "x", "--fix", "t", "--steps", "3",
                  "--lr", "0.01").output
    assert "W[0,1]" in out and "b[1]" in out and "Result: W = [[" in out
    assert "x = [[1, 2], [3, -1], [0.5, 0.5], [-2, 1.5]]" not in out  # 8 elements: summarised
    assert "x = [4×2] ‖·‖=" in out
    big = run_cli("descend", "L = mean((x @ W)**2)", "--x", "randn(3, 4)", "--W", "randn(4, 5)",
                  "--fix", "x", "--steps", "2").output
    assert "W [4×5]" in big and "W[0,1]" not in big and "‖·‖=" in big
