"""backtrace.testing: engines compared node by node, custom backwards checked, golden traces."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys

import pytest
import torch

import backtrace
import backtrace.testing as bt
from backtrace import Trace, TraceFormatError, UsageError
from backtrace.math import exp, log, relu, sigmoid, tanh
from backtrace.ops import OPS
from backtrace.testing import (assert_grads, assert_trace_matches, check_function,
                               explain_function, function_graph)

TEXTBOOK = {"x": -2.0, "y": 5.0, "z": -4.0}


def textbook(x, y, z):
    q = x + y
    f = q * z
    return f


# ---------------------------------------------------------------- graphs of Python functions

def test_function_graph_names_nodes_after_the_functions_locals():
    g = function_graph(textbook)
    assert [(n.id, n.op) for n in g.nodes] == [("x", "input"), ("y", "input"), ("z", "input"),
                                               ("q", "add"), ("f", "mul")]
    assert g.nodes[g.output].id == "f"


def test_function_graph_keeps_unused_inputs_and_names_a_bare_return_f():
    g = function_graph(lambda a, b: tanh(a) * 2, a=1.0)
    assert [n.id for n in g.nodes if n.op == "input"] == ["a", "b"]
    assert g.nodes[g.output].id == "f" and g.nodes[g.output].op == "mul"
    t = explain_function(lambda a, b: tanh(a) * 2, a=0.3, b=1.0)
    assert t.grads == {"a": pytest.approx(2 * (1 - math.tanh(0.3) ** 2), rel=1e-15), "b": None}


def test_explain_function_equals_explain_of_the_same_formula():
    t = explain_function(textbook, **TEXTBOOK)
    u = backtrace.explain("q = x + y; f = q * z", **TEXTBOOK)
    assert t.grads == u.grads == {"x": -4.0, "y": -4.0, "z": 3.0}
    # Inputs come first in the function's graph, so compare by node id.
    assert {n.id: (n.op, n.value, n.grad) for n in t.nodes} == \
        {n.id: (n.op, n.value, n.grad) for n in u.nodes}
    assert [(s.node, s.upstream, [(e.input, e.local) for e in s.edges]) for s in t.steps] == \
        [(s.node, s.upstream, [(e.input, e.local) for e in s.edges]) for s in u.steps]


def test_explain_function_on_torch_runs_the_function_on_tensors():
    def neuron(w, x, b):
        return sigmoid(w * x + b)

    t = explain_function(neuron, engine="torch", w=2.0, x=-1.0, b=0.5)
    assert t.engine == "torch"
    w, x, b = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (2.0, -1.0, 0.5))
    torch.sigmoid(w * x + b).backward()
    grads = {k: float(v) for k, v in t.grads.items() if v is not None}
    assert grads == pytest.approx({"w": w.grad.item(), "x": x.grad.item(), "b": b.grad.item()},
                                  rel=1e-15)


def test_explain_function_of_a_formula_and_unknown_engine():
    t = explain_function("f = x * y", engine="torch", x=3, y=4)
    assert (t.engine, t.grads) == ("torch", {"x": 4.0, "y": 3.0})
    with pytest.raises(UsageError, match="unknown engine"):
        explain_function(textbook, engine="jax", **TEXTBOOK)


def test_function_graph_runs_where_the_function_is_defined():
    g = function_graph(lambda x: 1 / log(x), x=2.0)  # the default 0.5 works too; 1.0 would not
    assert [n.op for n in g.nodes] == ["input", "log", "const", "div"]
    with pytest.raises(backtrace.DomainError):
        function_graph(lambda x: 1 / log(x), x=1.0)


def test_a_function_returning_no_number_is_a_usage_error():
    with pytest.raises(UsageError, match="returned str"):
        explain_function(lambda x: "x", x=1.0)


# ---------------------------------------------------------------- assert_grads

def test_assert_grads_passes_and_returns_every_engines_trace():
    traces = assert_grads(textbook, TEXTBOOK, expected={"x": -4, "y": -4, "z": 3, "q": -4})
    assert set(traces) == {"reference", "torch"}
    assert traces["torch"].grads == traces["reference"].grads == {"x": -4.0, "y": -4.0, "z": 3.0}


def test_assert_grads_accepts_positional_inputs_and_formulas():
    assert_grads(lambda a, b: exp(a) * tanh(b) + relu(a - b), [0.3, -0.7])
    assert_grads("1/(1+exp(-(w0*x0+w1*x1+w2)))",
                 {"w0": 2, "x0": -1, "w1": -3, "x1": -2, "w2": -3},
                 expected={"w0": -0.19661193, "x0": 0.39322387, "w2": 0.19661193})


def test_a_wrong_hand_derivation_names_the_node_and_every_engines_number():
    with pytest.raises(AssertionError) as info:
        assert_grads(textbook, TEXTBOOK, expected={"z": 3, "q": 4})
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("gradient of q is not the expected (hand-derived) value: expected 4,")
    assert "reference -4, torch -4, numeric -4" in first
    marked = [line for line in message.splitlines() if line.startswith("→")]
    assert len(marked) == 1 and re.search(r"q\s+gradient\s+-4\s+-4\s+-4\s+4$", marked[0])


def test_a_wrong_derivative_rule_is_caught_at_its_node_and_slot(monkeypatch):
    # Break the op table's rule d(a*b)/db = a into -a: the reference engine now disagrees with
    # torch and with finite differences, first at the mul node (backward order), slot 1.
    bad = dataclasses.replace(OPS["mul"], derivs=(OPS["mul"].derivs[0],
                                                 lambda a, b, o: -a))
    monkeypatch.setitem(OPS, "mul", bad)

    def f(x, y):
        q = x * y
        return tanh(q) + x

    with pytest.raises(AssertionError) as info:
        assert_grads(f, {"x": 0.5, "y": 2.0})
    first = str(info.value).splitlines()[0]
    assert first.startswith("engines disagree at node q = x * y, input slot 1 (y): "
                            "local derivative ∂q/∂y: reference -0.5, torch 0.5, numeric 0.5")
    marked = [line for line in str(info.value).splitlines() if line.startswith("→")]
    assert len(marked) == 1 and "q" in marked[0] and "1 (y)" in marked[0]


def test_finite_differences_disagree_at_a_kink_and_say_where():
    with pytest.raises(AssertionError, match=r"node %0 = relu\(x\), input slot 0 \(x\): local "
                                             r"derivative ∂%0/∂x: reference 0, torch 0, numeric 0.5"):
        assert_grads("f = relu(x) * y", {"x": 0.0, "y": 2.0})
    # Without the numeric opinion the two exact engines agree (both follow relu'(0) = 0).
    assert_grads("f = relu(x) * y", {"x": 0.0, "y": 2.0}, engines=("reference", "torch"))


def test_tolerances_are_honoured():
    # Finite differences are off by ~1e-10 here: a tolerance of 0 must fail, the default pass.
    assert_grads(lambda x: exp(x) * x, [1.3], engines=("reference", "numeric"))
    with pytest.raises(AssertionError, match="numeric"):
        assert_grads(lambda x: exp(x) * x, [1.3], engines=("reference", "numeric"), rtol=0,
                     atol=0)


def test_assert_grads_usage_errors():
    with pytest.raises(UsageError, match="unknown engine 'jax'"):
        assert_grads(textbook, TEXTBOOK, engines=("reference", "jax"))
    with pytest.raises(UsageError, match="expected names no node 'w'"):
        assert_grads(textbook, TEXTBOOK, expected={"w": 1.0})
    with pytest.raises(UsageError, match="as a dict"):
        assert_grads("f = x * y", [1.0, 2.0])


# ---------------------------------------------------------------- check_function

class MyMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * b, g * a


class SwappedMul(MyMul):
    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return g * a, g * b  # swapped inputs


class WrongSignExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return -g * y  # wrong sign


class HalfSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x  # missing factor 2


class RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("backward not implemented")


def test_a_correct_custom_function_passes_with_hand_derived_numbers():
    a, b = torch.tensor(2.0), torch.tensor(-3.0)
    report = check_function(MyMul, a, b)
    assert report.ok and [(r.node, r.slot, r.input) for r in report.rows] == \
        [("MyMulBackward", 0, "a"), ("MyMulBackward", 1, "b")]
    # The upstream gradient u is random; the vector-Jacobian products are u*b and u*a.
    u = report.rows[0].backward.item() / -3.0
    assert report.rows[1].backward.item() == pytest.approx(2.0 * u, rel=1e-12)
    assert report.rows[1].numeric.item() == pytest.approx(2.0 * u, rel=1e-8)


@pytest.mark.parametrize("fn, inputs, node, slot, name", [
    (SwappedMul, (torch.tensor([2.0, 1.5]), torch.tensor([-3.0, 0.5])), "SwappedMulBackward", 0, "a"),
    (WrongSignExp, (torch.tensor([0.3, -1.2]),), "WrongSignExpBackward", 0, "x"),
    (HalfSquare, (torch.tensor([1.0, -2.0, 0.5]),), "HalfSquareBackward", 0, "x"),
])
def test_each_wrong_backward_is_caught_at_its_node_and_slot(fn, inputs, node, slot, name):
    with pytest.raises(AssertionError) as info:
        check_function(fn, *inputs)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"backward of {node} ({fn.__name__}.apply(")
    assert re.search(rf"is wrong at input slot {slot} \({name}\): worst at element \[\d\]: "
                     rf"numeric \[.*\], backward \[.*\] \(upstream gradient random", first)
    assert torch.autograd.Function.__dict__["apply"].__func__.__qualname__ == "Function.apply"


def test_the_numbers_in_the_report_are_the_true_and_the_broken_gradients():
    x = torch.tensor(1.5)
    with pytest.raises(AssertionError) as info:
        check_function(HalfSquare, x)
    m = re.search(r"numeric (\S+), backward (\S+) \(upstream gradient (\S+);", str(info.value))
    numeric, backward, upstream = (float(v) for v in m.groups())
    # Six significant digits in the message.
    assert numeric == pytest.approx(upstream * 2 * 1.5, rel=1e-5)  # d(x²)/dx = 2x
    assert backward == pytest.approx(upstream * 1.5, rel=1e-5)  # what HalfSquare returns


def test_a_wrong_node_inside_a_composite_function_is_named_first_in_backward_order():
    def f(x, y):
        h = SwappedMul.apply(x, y)
        return torch.sin(h).sum() + HalfSquare.apply(x).sum()

    with pytest.raises(AssertionError) as info:
        check_function(f, torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3]))
    message = str(info.value)
    # HalfSquare was applied last, so its backward runs first: it is the first wrong node.
    assert message.startswith("backward of HalfSquareBackward (HalfSquare.apply(x)) is wrong at "
                              "input slot 0 (x)")
    assert "SwappedMulBackward" not in message.splitlines()[0]

    def g(x, y):
        return torch.sin(SwappedMul.apply(x, y)).sum() + torch.tanh(x).sum()

    with pytest.raises(AssertionError) as info:
        check_function(g, torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3]))
    rows = str(info.value).splitlines()
    assert rows[0].startswith("backward of SwappedMulBackward (SwappedMul.apply(x, y)) is wrong "
                              "at input slot 0 (x)")
    # The neighbourhood shows the correct sin node next to it, ticked.
    assert any(r.startswith("✓") and "SinBackward0" in r for r in rows)


swapped_mul = SwappedMul.apply  # an alias taken before check_function starts recording


class SwappedMulModule(torch.nn.Module):
    def forward(self, x, y):
        return swapped_mul(x, y).sum()


@pytest.mark.parametrize("form", [lambda x, y: SwappedMul.apply(x, y).sum(),
                                  lambda x, y: swapped_mul(x, y).sum(),
                                  SwappedMulModule()], ids=["apply", "alias", "module"])
def test_a_wrong_backward_is_named_however_the_function_is_applied(form):
    forward = MyMul.__dict__["forward"]
    with pytest.raises(AssertionError) as info:
        check_function(form, torch.tensor([2.0, 1.5]), torch.tensor([-3.0, 0.5]))
    # The custom node itself, not the mul inside its forward (which is right).
    assert str(info.value).startswith("backward of SwappedMulBackward (SwappedMul.apply(x, y)) is "
                                      "wrong at input slot 0 (x)")
    assert MyMul.__dict__["forward"] is forward and "forward" not in SwappedMul.__dict__


def test_a_backward_that_raises_is_reported_at_its_node():
    with pytest.raises(AssertionError, match=r"backward of RaisingBackwardBackward .* its backward "
                                             r"raised RuntimeError: backward not implemented"):
        check_function(lambda x: RaisingBackward.apply(x).sum(), torch.tensor([1.0, 2.0]))


def test_torch_functions_and_modules_pass():
    torch.manual_seed(0)
    report = check_function(lambda x, y: (torch.tanh(x @ y) * x.sum()).mean(),
                            torch.randn(2, 3), torch.randn(3, 2))
    assert report.ok and {r.node for r in report.rows} >= {"MmBackward0", "TanhBackward0"}
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    report = check_function(model, torch.randn(5, 3))
    assert report.ok
    # Parameters are named as in the model; every one of them is checked.
    assert {r.input for r in report.rows} >= {"0.weight", "0.bias", "2.weight", "2.bias", "input"}
    assert next(model.parameters()).dtype == torch.float32  # the user's model is left alone


def test_large_inputs_are_checked_along_a_random_direction():
    report = check_function(MyMul, torch.randn(40, 40),
                            torch.randn(40, 40), max_elements=100)
    assert report.ok and all(isinstance(r.backward, float) for r in report.rows)
    with pytest.raises(AssertionError, match="SwappedMulBackward"):
        check_function(SwappedMul, torch.randn(40, 40), torch.randn(40, 40), max_elements=100)


def test_apply_is_restored_when_the_forward_raises():
    original = torch.autograd.Function.__dict__["apply"]

    def boom(x):
        MyMul.apply(x, x)
        raise ValueError("forward failed")

    with pytest.raises(ValueError, match="forward failed"):
        check_function(boom, torch.tensor(1.0))
    assert torch.autograd.Function.__dict__["apply"] is original


def test_nothing_to_check_is_a_usage_error():
    with pytest.raises(UsageError, match="does not depend"):
        check_function(lambda x: x.detach() * 2, torch.tensor([1.0]))


# ---------------------------------------------------------------- golden traces

def test_golden_round_trip_tolerance_and_first_difference(tmp_path):
    path = tmp_path / "golden" / "textbook.json"
    t = backtrace.explain("q = x + y; f = q * z", **TEXTBOOK)
    with pytest.raises(AssertionError, match="no golden trace .* --backtrace-update"):
        assert_trace_matches(t, path)
    with bt.configure(update_goldens=True):
        assert_trace_matches(t, path)
    assert Trace.from_json(path.read_text()) == t
    assert_trace_matches(t, path)
    # Values within tolerance pass; beyond it the first difference is named.
    assert_trace_matches(backtrace.explain("q = x + y; f = q * z", x=-2 + 1e-12, y=5, z=-4), path)
    with pytest.raises(AssertionError, match=r"at node y, value: 5.001 != golden 5 "):
        assert_trace_matches(backtrace.explain("q = x + y; f = q * z", x=-2, y=5.001, z=-4), path)
    edited = json.loads(path.read_text())
    edited["steps"][0]["edges"][1]["local"] = 99.0
    path.write_text(json.dumps(edited))
    with pytest.raises(AssertionError, match=r"at step 1 \(node f\), input slot 1 \(z\), local: "
                                             r"3 != golden 99"):
        assert_trace_matches(t, path)


def test_golden_structure_must_match_exactly(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(backtrace.explain("q = x + y; f = q * z", **TEXTBOOK).to_json())
    with pytest.raises(AssertionError, match=r"node q, op: 'sub' != golden 'add'"):
        assert_trace_matches(backtrace.explain("q = x - y; f = q * z", **TEXTBOOK), path)
    with pytest.raises(AssertionError, match="the list of nodes: 7 nodes, golden has 5"):
        assert_trace_matches(backtrace.explain("q = x + y; f = q * z * 1", **TEXTBOOK), path)


def test_golden_of_a_newer_schema_or_malformed_is_a_clear_error(tmp_path):
    path = tmp_path / "g.json"
    data = json.loads(backtrace.explain("f = x * y", x=1, y=2).to_json())
    path.write_text(json.dumps({**data, "schema": "backtrace.trace/2"}))
    with pytest.raises(TraceFormatError, match="newer than this backtrace reads"):
        assert_trace_matches(backtrace.explain("f = x * y", x=1, y=2), path)
    path.write_text("{not json")
    with pytest.raises(TraceFormatError, match="is not JSON"):
        assert_trace_matches(backtrace.explain("f = x * y", x=1, y=2), path)


def test_golden_of_a_torch_trace(tmp_path):
    path = tmp_path / "torch.json"
    w = torch.tensor([[1.0, -2.0]], requires_grad=True)
    with backtrace.trace(names={"w": w}, level="full") as t:
        torch.tanh(w @ torch.tensor([[0.5], [0.25]])).sum().backward()
    with bt.configure(update_goldens=True):
        assert_trace_matches(t.trace, path)
    assert_trace_matches(t.trace, path)
    with backtrace.trace(names={"w": w}, level="full") as t2:
        torch.tanh(w @ torch.tensor([[0.5], [0.5]])).sum().backward()
    with pytest.raises(AssertionError, match="trace differs from golden"):
        assert_trace_matches(t2.trace, path)


def test_configure_sets_settings_for_its_block_and_puts_each_back():
    seen = []
    assert bt.current_settings() == bt.Settings()
    with bt.configure(on_trace=seen.append):
        outer = bt.configure(update_goldens=True)
        outer.__enter__()
        explain_function("f = x * y", x=3, y=4)
        with pytest.raises(ValueError):
            with bt.configure(on_trace=None):
                assert bt.current_settings() == bt.Settings(update_goldens=True)
                raise ValueError
        assert bt.current_settings().on_trace == seen.append
        assert_grads("f = x * y", {"x": 1, "y": 2}, engines=("reference", "numeric"))
    # The blocks ended out of order: each put back only what it changed.
    assert bt.current_settings() == bt.Settings(update_goldens=True)
    outer.__exit__(None, None, None)
    assert bt.current_settings() == bt.Settings()
    assert [t.engine for t in seen] == ["reference", "reference"]
    with pytest.raises(UsageError, match="no testing setting 'update'"):
        with bt.configure(update=True):
            pass


def test_testing_imports_neither_torch_nor_pytest():
    code = ("import sys, backtrace.testing as t; t.assert_grads('f = x * y', {'x': 1, 'y': 2}, "
            "engines=('reference', 'numeric')); print(sorted({'torch', 'pytest'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_tensor_used_in_two_slots_is_checked_slot_by_slot():
    class AsymmetricSwap(torch.autograd.Function):
        """f(a, b) = a * b**2, whose backward swaps the two slots' gradients."""

        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            return g * 2 * a * b, g * b * b  # swapped

    x = torch.tensor(1.5)
    # Through one tensor in both slots the sum of the two gradients is right (b² + 2ab): only a
    # slot-by-slot check can see the swap.
    with pytest.raises(AssertionError, match=r"AsymmetricSwapBackward .* input slot 0 \(t\): numeric"):
        check_function(lambda t: AsymmetricSwap.apply(t, t), x)
