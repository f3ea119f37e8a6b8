"""`backtrace nan SCRIPT.py`: runs a script, stops at its first backward call with an inf or NaN
gradient (exit 1, the report with the script's own line), or says how many calls stayed finite."""
from __future__ import annotations

import textwrap

from click.testing import CliRunner

from backtrace.cli import cli

TRAIN = """
import sys
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
bad_step = int(sys.argv[1])
for step in range(5):
    x = torch.randn(16, 4)
    h = model(x)
    if step == bad_step:
        h = torch.where(h > 0, torch.sqrt(h), torch.zeros_like(h))
    loss = h.mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    print("step", step, "done")
"""


def run(tmp_path, source: str, *args: str):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(source))
    return CliRunner().invoke(cli, ["nan", str(script), *args])


def test_stops_at_the_first_nan_gradient_with_the_scripts_line(tmp_path):
    out = run(tmp_path, TRAIN, "2")
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert lines[:2] == ["step 0 done", "step 1 done"]  # the script ran until the bad call
    assert "step 2 done" not in out.output  # and stopped there
    assert lines[2].startswith("first non-finite gradient in backward call 3: sqrt")
    text = " ".join(out.output.split())  # lines are wrapped to the terminal
    assert f"{tmp_path / 'train.py'}:14: h = torch.where(h > 0, torch.sqrt(h)," in text
    assert "cause: 0 × NaN" in text and "fix: the double where" in text


def test_full_level_gives_the_same_culprit(tmp_path):
    out = run(tmp_path, TRAIN, "--level", "full")  # after the script: the script's arguments
    assert out.exit_code == 1 and "invalid literal for int() with base 10: '--level'" in out.output
    script = tmp_path / "train.py"
    out = CliRunner().invoke(cli, ["nan", "--level", "full", str(script), "0"])
    assert out.exit_code == 1 and "backward call 1: sqrt" in out.output


def test_all_finite_exits_0_with_the_count(tmp_path):
    out = run(tmp_path, TRAIN, "99")
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1] == "no non-finite value in 5 backward calls"


def test_a_script_without_backward(tmp_path):
    out = run(tmp_path, "print('hello')\n")
    assert out.exit_code == 0
    assert out.output.splitlines()[-1] == "no non-finite value in 0 backward calls (the script made none)"


def test_the_scripts_own_error_reaches_the_user_whole(tmp_path):
    out = run(tmp_path, "import torch\nx = torch.ones(1, requires_grad=True)\n"
                        "(x * 2).sum().backward()\nraise ValueError('bad data')\n")
    assert out.exit_code == 1
    assert "ValueError: bad data" in out.output and "Traceback" in out.output
    assert "stopped with ValueError: bad data after 1 finite backward call" in out.output


def test_a_loss_that_overflows_in_the_forward_stops_too(tmp_path):
    out = run(tmp_path, """
        import torch
        x = torch.full((4,), 300.0, requires_grad=True)
        loss = (x.half() * x.half()).sum()
        loss.backward()
        print("not reached")
        """)
    assert out.exit_code == 1 and "not reached" not in out.output
    assert "first non-finite forward value in backward call 1: mul" in out.output
    assert "cause: overflow" in out.output and "float16" in out.output


def test_help_teaches():
    out = CliRunner().invoke(cli, ["nan", "--help"])
    assert out.exit_code == 0 and "backtrace nan train.py --epochs 3" in out.output
    assert "nan" in CliRunner().invoke(cli, ["--help"]).output


def test_the_readme_example():
    from pathlib import Path

    example = Path(__file__).parent.parent / "examples" / "nan_where.py"
    out = CliRunner().invoke(cli, ["nan", str(example)])
    text = " ".join(out.output.split())
    assert out.exit_code == 1 and "backward call 1: sqrt" in text
    assert "nan_where.py:15: dist = torch.where(pred > 0, torch.sqrt(pred)," in text
    assert "cause: 0 × NaN" in text and "(10 non-finite)" in text
    readme = (example.parent.parent / "README.md").read_text()
    assert "examples/nan_where.py:15: dist = torch.where" in readme
