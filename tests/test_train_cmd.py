"""`backtrace train SCRIPT.py`: a user's unmodified script, watched through its optimizers."""
from __future__ import annotations

import textwrap

import torch
from click.testing import CliRunner

from backtrace.cli import cli

SCRIPT = """
import sys, torch
torch.manual_seed(0)
epochs = int(sys.argv[1])
zero = sys.argv[2] == "zero"
x = torch.randn(200, 3)
y = x.sum(1, keepdim=True)

def main():
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(epochs):
        for i in range(0, 200, 50):
            if zero:
                opt.zero_grad()
            loss = ((model(x[i:i+50]) - y[i:i+50]) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    print("losses", ",".join(repr(v) for v in losses))

main()
"""


def run(tmp_path, *args, script=SCRIPT):
    path = tmp_path / "user_train.py"
    path.write_text(textwrap.dedent(script))
    return CliRunner().invoke(cli, ["train", *args[:-2], str(path), *args[-2:]])


def test_unmodified_script_is_watched(tmp_path):
    r = run(tmp_path, "--dataset-size", "200", "--batch-size", "50", "--plot",
            str(tmp_path / "loss.svg"), "2", "zero")
    assert r.exit_code == 0, r.output
    printed = next(line for line in r.output.splitlines() if line.startswith("losses "))
    losses = [float(v) for v in printed.split()[1].split(",")]
    assert "optimizer 1: SGD on Sequential, 8 steps" in r.output
    assert "200 samples, batch 50 -> 4 steps per epoch" in r.output
    assert "8 steps = 2 epochs of 4 steps" in r.output and "no warnings" in r.output
    # the table's last rows carry the script's own losses, with epoch and batch
    rows = [line.split() for line in r.output.splitlines() if line.split()[:3] == ["8", "2", "4"]]
    assert rows and float(rows[0][3]) == float(f"{losses[-1]:.4g}")
    assert f"loss {losses[0]:.4g} at the first step, {losses[-1]:.4g} at the last" in r.output
    assert "0.weight" in r.output  # layer names found in the script's frames
    assert (tmp_path / "loss.svg").read_bytes().lstrip().startswith(b"<?xml")


def test_forgotten_zero_grad_is_reported(tmp_path):
    r = run(tmp_path, "2", "nozero")
    assert r.exit_code == 0
    assert "warning: step 2: the gradient of layer 0 (Linear)" in r.output
    assert "was not zeroed after step 1" in r.output


def test_script_errors_keep_the_report_and_exit_1(tmp_path):
    r = run(tmp_path, "1", "zero", script=SCRIPT.replace("main()\n", "main()\nraise ValueError('boom')\n"))
    assert r.exit_code == 1 and "ValueError: boom" in r.output
    assert "optimizer 1: SGD on Sequential, 4 steps" in r.output


def test_no_optimizer(tmp_path):
    r = run(tmp_path, "1", "x", script="print('hello')\n")
    assert r.exit_code == 0 and "made no optimizer step" in r.output
    assert torch.Tensor.backward.__module__.startswith("torch")  # the capture is removed


def test_usage_errors(tmp_path):
    r = CliRunner().invoke(cli, ["train", str(tmp_path / "missing.py")])
    assert r.exit_code == 2
    r = run(tmp_path, "--dataset-size", "10", "1", "zero")
    assert r.exit_code == 2 and "together" in r.output


def test_heatmap_chart_and_window(tmp_path):
    r = run(tmp_path, "--heatmap", str(tmp_path / "h.svg"), "--window", "3", "2", "zero")
    assert r.exit_code == 0, r.output
    assert 'id="heatmap-rms"' in (tmp_path / "h.svg").read_text()
    assert "8 steps" in r.output and "the last 3 steps are kept in detail" in r.output
    assert "gradient RMS ‖∂L/∂W‖/√n (as backward produced it) per layer" in r.output
    rows = [line.split()[0] for line in r.output.splitlines() if line.split()[1:3] == ["-", "-"]]
    assert rows == ["6", "7", "8"]  # the table holds the window
    r = run(tmp_path, "--heatmap", str(tmp_path / "h.gif"), "2", "zero")
    assert r.exit_code == 2 and "use .svg, .png or .pdf" in r.output


def test_ranks_other_than_0_stay_quiet(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # as torchrun sets it
    r = run(tmp_path, "2", "nozero")
    assert r.exit_code == 0 and r.stderr == ""  # not even the warnings: rank 0 reports
    assert "losses" in r.stdout and "optimizer 1" not in r.stdout
    traced = CliRunner().invoke(cli, ["trace", "-o", str(tmp_path / "t.json"),
                                      str(tmp_path / "user_train.py"), "1", "zero"])
    assert traced.exit_code == 0, traced.output
    assert "Backward call" not in traced.stdout and (tmp_path / "t.rank1.json").exists()
    assert not (tmp_path / "t.json").exists()
