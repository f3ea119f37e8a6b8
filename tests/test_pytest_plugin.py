"""The pytest plugin, run inside pytest with pytester: fixture, failure report, files, goldens."""
from __future__ import annotations

import json
import re
import sys

import pytest
import torch  # noqa: F401 - loaded once here: pytester's in-process runs must not re-import it

from backtrace import Trace

pytest_plugins = ["pytester"]

# A test file for the inner sessions: an MLP-ish graph traced through the fixture, then failing.
FAILING = '''
import torch

def test_fails_after_tracing(backtrace):
    w = torch.tensor([[2.0, -1.0]], requires_grad=True)
    x = torch.tensor([[3.0], [4.0]])
    with backtrace.trace(names={"w": w, "x": x}, level="full") as t:
        loss = torch.tanh(w @ x).sum()
        loss.backward()
    assert t.trace.engine == "torch"
    assert w.grad.sum().item() == 123.0, "deliberately failing"
'''


def test_failing_test_report_shows_the_backward_table(pytester):
    pytester.makepyfile(test_inner=FAILING)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "deliberately failing" in out
    assert "backtrace: backward pass of the last trace" in out
    # The table's header and the rows of the traced ops: the oracle is the graph we built.
    assert "upstream" in out and "contribution" in out
    table = out.split("backtrace: backward pass of the last trace")[1]
    assert "torch engine" in table
    assert "w" in table


def test_passing_test_report_has_no_table(pytester):
    pytester.makepyfile(test_inner=FAILING.replace("== 123.0", "!= 123.0"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "backward pass of the last trace" not in result.stdout.str()


def test_backtrace_dir_saves_svg_and_json(pytester):
    pytester.makepyfile(test_inner=FAILING)
    out_dir = pytester.path / "traces"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--backtrace-dir={out_dir}")
    result.assert_outcomes(failed=1)
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == ["test_inner.py_test_fails_after_tracing.json",
                     "test_inner.py_test_fails_after_tracing.svg"]
    trace = Trace.from_json((out_dir / files[0]).read_text())
    assert trace.engine == "torch"
    # w's gradient: d/dw sum(tanh(w @ x)) = (1 - tanh(2*3 - 4)**2) * x^T
    import math
    g = 1 - math.tanh(2.0) ** 2
    grads = {k: v for k, v in trace.grads.items() if v is not None}
    assert "w" in grads
    assert grads["w"].flatten().tolist() == pytest.approx([g * 3.0, g * 4.0], rel=1e-6)
    assert (out_dir / files[1]).read_text().lstrip().startswith(("<?xml", "<svg"))
    assert f"saved {out_dir / files[0]}" in result.stdout.str()


HOOKS = '''
import torch
import torch.nn.modules.module as nn_module

ORIGINAL = (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad)

def test_a_fails_inside_the_tracer(backtrace):
    x = torch.tensor(2.0, requires_grad=True)
    with backtrace.trace(names={"x": x}):
        (x * x).backward()
        assert False, "failing inside the with block"

def test_b_fails_with_a_tracer_never_exited(backtrace):
    x = torch.tensor(2.0, requires_grad=True)
    backtrace.trace(names={"x": x}).__enter__()
    (x * 3).backward()
    assert False, "failing with the tracer still entered"

def test_c_nothing_is_left_behind():
    assert (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad) == ORIGINAL
    assert not nn_module._global_forward_pre_hooks and not nn_module._global_forward_hooks
    assert torch._C._len_torch_function_stack() == 0
    x = torch.tensor(2.0, requires_grad=True)
    (x * x).backward()
    assert x.grad.item() == 4.0
'''


def test_hooks_are_removed_after_a_failing_test(pytester):
    pytester.makepyfile(test_hooks=HOOKS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(failed=2, passed=1)
    out = result.stdout.str()
    assert out.count("backtrace: backward pass of the last trace") == 2


GOLDEN = '''
import backtrace
from backtrace.testing import assert_trace_matches

def test_golden():
    t = backtrace.explain("q = x + y; f = q * z", x=-2, y=5, z=VALUE_Z)
    assert_trace_matches(t, "golden/textbook.json")
'''


def test_backtrace_update_writes_goldens_then_comparison_catches_a_change(pytester):
    pytester.makepyfile(test_golden=GOLDEN.replace("VALUE_Z", "-4"))
    golden = pytester.path / "golden" / "textbook.json"
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "no golden trace" in result.stdout.str() and "--backtrace-update" in result.stdout.str()
    assert not golden.exists()

    result = pytester.runpytest("-p", "no:cacheprovider", "--backtrace-update")
    result.assert_outcomes(passed=1)
    saved = json.loads(golden.read_text())
    assert saved["schema"] == "backtrace.trace/1" and saved["grads"] == {"x": -4.0, "y": -4.0,
                                                                         "z": 3.0}
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)

    pytester.makepyfile(test_golden=GOLDEN.replace("VALUE_Z", "-5"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*trace differs from golden*node z*value*-5 != golden -4*"])
    result = pytester.runpytest("-p", "no:cacheprovider", "--backtrace-update")
    result.assert_outcomes(passed=1)
    assert json.loads(golden.read_text())["grads"]["x"] == -5.0


def test_update_flag_does_not_leak_out_of_the_inner_session(pytester):
    import backtrace.testing as testing

    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.runpytest("-p", "no:cacheprovider", "--backtrace-update").assert_outcomes(passed=1)
    assert testing.current_settings().update_goldens is False


def test_fixture_records_explain_and_explain_function(pytester):
    pytester.makepyfile(test_rec='''
from backtrace.math import tanh

def test_rec(backtrace):
    backtrace.explain("f = x * y", x=3, y=4)
    def g(a):
        h = tanh(a)
        return h * a
    backtrace.explain_function(g, a=0.5)
    assert [t.output for t in backtrace.traces] == ["f", "f"]
    assert backtrace.last.node("h").value > 0.46
    assert False
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    table = result.stdout.str().split("backtrace: backward pass of the last trace")[1]
    # The last trace (g's: f = h * a, h = tanh(a)), not the first (f = x * y).
    assert re.search(r"^\d+\s+h\s+tanh\s", table, re.M) and " x " not in table


def test_plugin_loads_without_torch(pytester):
    pytester.makepyfile(test_light='''
import sys

def test_light(backtrace):
    assert "torch" not in sys.modules
    t = backtrace.explain("f = x * y", x=3, y=4)
    assert t.grads == {"x": 4.0, "y": 3.0}
    assert "torch" not in sys.modules
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)


def test_options_are_listed_in_help(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--backtrace-dir=DIR*", "*--backtrace-update*"])
    assert sys.modules.get("backtrace.pytest_plugin") is not None
