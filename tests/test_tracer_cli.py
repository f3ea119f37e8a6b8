"""`backtrace explain --engine/--check` and `backtrace trace SCRIPT.py` through click's CliRunner."""
from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from backtrace.cli import cli
from backtrace.traces import Trace

LECTURE = ["explain", "f=(x+y)*z", "--x", "-2", "--y", "5", "--z", "-4"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_explain_both_engines_by_default():
    out = invoke(*LECTURE).output
    reference = invoke(*LECTURE, "--engine", "reference").output
    assert out.startswith(reference.rstrip("\n"))  # the reference view is unchanged, first
    assert "Torch engine (float64)" in out and "f     MulBackward0      -12         1" in out
    assert out.rstrip().endswith("engines agree, max |Δ| = 0")
    assert "Torch engine" not in reference and "agree" not in reference


def test_explain_torch_engine_alone_shows_the_same_numbers():
    out = invoke(*LECTURE, "--engine", "torch", "--format", "json").output
    data = json.loads(out)
    assert data["engine"] == "torch" and data["grads"] == {"x": -4.0, "y": -4.0, "z": 3.0}
    trace = Trace.from_json(out)
    assert [s.node for s in trace.steps] == ["f", "%0"]


def test_explain_json_carries_the_verdicts():
    data = json.loads(invoke(*LECTURE, "--format", "json", "--check", "numeric").output)
    assert data["engine"] == "reference"
    checks = Trace.from_dict(data).meta["check"]
    assert [c["between"] for c in checks] == [("reference", "torch"),
                                              ("reference", "finite differences")]
    assert checks[0]["agree"] is True and checks[0]["max_abs_diff"] == 0.0
    assert checks[1]["agree"] is True and checks[1]["max_abs_diff"] < 1e-8


def test_explain_output_file_carries_the_verdicts_too(tmp_path):
    path = tmp_path / "t.json"
    assert invoke(*LECTURE, "-o", str(path)).exit_code == 0
    (check,) = Trace.from_json(path.read_text()).meta["check"]
    assert check["between"] == ("reference", "torch") and check["agree"] is True


def test_explain_numeric_check_names_a_kink():
    out = invoke("explain", "f=relu(x)*y", "--x", "0", "--y", "2", "--check", "numeric").output
    assert "engines agree, max |Δ| = 0" in out
    assert ("reference and finite differences disagree, max |Δ| = 1; first difference in backward "
            "order at x gradient: reference 0, finite differences 1") in out


def test_explain_markdown_has_the_torch_section():
    out = invoke(*LECTURE, "--format", "markdown").output
    assert "## Torch engine (float64)" in out and "| f    | MulBackward0" in out


SCRIPT = textwrap.dedent("""
    import sys
    import torch, torch.nn as nn, torch.nn.functional as F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    y = torch.randint(0, 3, (16,))
    for epoch in range(int(sys.argv[1])):
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
    print("trained", sys.argv[1:])
""")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def test_trace_prints_the_first_backward_call(script, tmp_path):
    import torch

    result = invoke("trace", "-o", str(tmp_path / "t.json"), str(script), "2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "trained ['2']" in out  # the script ran with its own arguments
    assert "Backward call 1 (backward, level stats)" in out
    assert "%7 (loss)    cross_entropy" in out and "%5 (logits)  linear         2" in out
    trace = Trace.from_json((tmp_path / "t.json").read_text())
    assert trace.meta["call"] == 1 and set(trace.grads) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    # the first call's gradient, recomputed here with the script's seed, before any SGD step
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert trace.grads["2.bias"].norm == pytest.approx(model[2].bias.grad.norm().item(), rel=1e-6)


def test_trace_call_and_module_filter(script):
    out = invoke("trace", "--call", "2", "--module", "2", str(script), "3").output
    assert "Backward call 2 (backward, level stats, module 2)" in out
    assert "relu" not in out and "0.weight" not in out and "2.weight" in out


@pytest.mark.parametrize("args,code,message", [
    (["--call", "5"], 1, "made 2 backward calls; --call 5 asks for the 5th"),
    (["--module", "encoder"], 2, "no node in module 'encoder' (modules: 0, 1, 2)"),
])
def test_trace_errors(script, args, code, message):
    result = invoke("trace", *args, str(script), "2")
    assert result.exit_code == code and message in result.output


def test_trace_script_without_backward_and_missing_script(tmp_path):
    quiet = tmp_path / "quiet.py"
    quiet.write_text("import torch\nwith torch.no_grad():\n    torch.ones(2) * 2\n")
    result = invoke("trace", str(quiet))
    assert result.exit_code == 1 and "made no backward call" in result.output
    result = invoke("trace", str(tmp_path / "nope.py"))
    assert result.exit_code == 2 and "no such script" in result.output
    broken = tmp_path / "broken.py"
    broken.write_text("raise KeyError('oops')\n")
    result = invoke("trace", str(broken))  # the script's own error reaches the user whole
    assert result.exit_code == 1 and result.output.startswith("Traceback (most recent call last)")
    assert f'File "{broken}", line 1, in <module>' in result.output
    assert "KeyError: 'oops'" in result.output and "runpy" not in result.output
    assert "made no backward call before it stopped (KeyError: 'oops')" in result.output
