"""The training examples run (quickly, in this process) and print what they promise."""
from __future__ import annotations

import math
import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, args, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [name, *args])
    monkeypatch.setattr(sys, "path", [str(EXAMPLES), *sys.path])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_linear_regression_lowlevel(monkeypatch, capsys):
    out = run_example("linear_regression_lowlevel.py", ["--epochs", "3"], monkeypatch, capsys)
    good, bad = out.split("=== grad.zero_() FORGOTTEN ===")
    assert "1000 samples, batch 100 -> 10 steps per epoch" in good
    assert "30 steps = 3 epochs of 10 steps" in good and "no warnings" in good
    first, last = map(float, re.search(r"loss (\S+) at the first step, (\S+) at the last",
                                       good).groups())
    assert last < first / 5
    for param in ("w", "b"):
        assert f"warning: step 2: the gradient of {param} was not zeroed after step 1" in bad
    assert "the loss is rising" in bad and "probably because gradients accumulate" in bad
    errors = [float(v) for v in re.findall(r"largest error in w: (\S+)", out)]
    assert errors[0] < errors[1]  # after 3 epochs, forgetting the zeroing has hurt the fit


def test_train_mlp(monkeypatch, capsys, tmp_path):
    out = run_example("train_mlp.py", ["--epochs", "3", "--flow", str(tmp_path / "flow.svg")],
                      monkeypatch, capsys)
    assert "900 samples, batch 100 -> 9 steps per epoch" in out
    assert "27 steps = 3 epochs of 9 steps" in out and "no warnings" in out
    first = float(re.search(r"first loss (\S+)", out).group(1))
    assert abs(first - math.log(3)) < 0.05  # an untrained softmax is nearly uniform over 3 classes
    accuracy = float(re.search(r"training accuracy (\S+)%", out).group(1))
    assert accuracy > 50
    assert (tmp_path / "flow.svg").exists()


def test_learning_rates(monkeypatch, capsys, tmp_path):
    out = run_example("learning_rates.py", ["--plot", str(tmp_path / "rates.png")], monkeypatch,
                      capsys)
    lines = {line.split(":")[0].strip(): line for line in out.splitlines() if "lr=" in line}
    assert lines["lr=0.0001"].endswith("too slow")
    assert "converged" in lines["lr=0.01"] and lines["lr=10"].endswith("diverged (at step 1)")
    net = [line for line in out.splitlines() if "mean loss of the first epoch" in line]
    assert net[1].endswith("no warnings") and "non-finite" in net[2]
    assert (tmp_path / "rates.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sgd_vs_adam(monkeypatch, capsys):
    out = run_example("sgd_vs_adam.py", ["--epochs", "2"], monkeypatch, capsys)
    ends = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in
            re.finditer(r"(\w+): ends at \((\S+), (\S+)\)", out)}
    assert set(ends) == {"sgd", "momentum", "adam"}
    # momentum gets closest to the valley's minimum (1, -1) in the same number of steps
    dist = {k: math.dist(v, (1, -1)) for k, v in ends.items()}
    assert dist["momentum"] < dist["sgd"] < dist["adam"]
    accuracies = [float(v) for v in re.findall(r"accuracy (\S+)%", out)]
    assert len(accuracies) == 2 and all(a > 100 / 3 for a in accuracies)
