"""`backtrace trace` and `backtrace train` end a user's script as Python would (its traceback, the
message and status of sys.exit, 130 after Ctrl-C, 143 after SIGTERM), then show what was recorded.
The oracle for "as Python would" is Python itself, running the same script."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from backtrace.cli import cli

TRAIN = """
import os, signal, sys, time
def step():
    opt.zero_grad()
    loss = (model(x) - 1).pow(2).mean()
    loss.backward()
    opt.step()
if "ORACLE" not in os.environ:  # Python's own run of the script needs no training to end alike
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 3)
    for _ in range(3):
        step()
def check(n):
    if n > 2:
        raise ValueError(f"bad batch {n}")
"""

ENDINGS = {
    "error": "check(3)\n",
    "exit3": "sys.exit(3)\n",
    "message": "sys.exit('stopped: no more data')\n",
    "exit0": "sys.exit(0)\n",
}


def script(tmp_path: Path, ending: str) -> Path:
    path = tmp_path / f"user_{ending}.py"
    path.write_text(TRAIN + ENDINGS[ending])
    return path


def python(path: Path) -> subprocess.CompletedProcess:
    """Python itself running the script (without the training, which ends nothing)."""
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ORACLE": "1"})


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> dict:
    """Each script, and how Python itself ends it (exit code and stderr)."""
    root = tmp_path_factory.mktemp("scripts")
    paths = {name: script(root, name) for name in ENDINGS}
    return {name: (path, python(path)) for name, path in paths.items()}


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.parametrize("command", ["trace", "train"])
def test_the_script_ends_as_python_ends_it_then_the_record(scripts, command, ending):
    path, expected = scripts[ending]
    r = invoke(command, str(path))
    assert r.exit_code == expected.returncode
    assert r.stderr.startswith(expected.stderr)  # Python's own words first, whole
    if ending == "error":
        assert expected.stderr.startswith("Traceback (most recent call last):")
        assert f'File "{path}", line 18, in check' in r.stderr
        assert r.stderr.count("ValueError: bad batch 3") == 1 and "runpy" not in r.stderr
    if ending == "message":
        assert r.stderr.startswith("stopped: no more data\n")
    if command == "trace":  # then what was recorded
        assert "Backward call 1 (backward, level stats)" in r.stdout
    else:
        assert "optimizer 1: SGD on Sequential, 3 steps" in r.stdout


CTRL_C = TRAIN + "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\n"
TERM = TRAIN + "print('ready', flush=True)\nwhile True:\n    step()\n    time.sleep(0.01)\n"


def backtrace_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backtrace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_ctrl_c_keeps_and_prints_the_recorded_call(tmp_path):
    path = tmp_path / "ctrl_c.py"
    path.write_text(CTRL_C)
    p = backtrace_process("trace", str(path))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130  # as a shell reports a process stopped by Ctrl-C
    assert "Traceback (most recent call last):" in err and err.rstrip().endswith("KeyboardInterrupt")
    assert "Backward call 1 (backward, level stats)" in out and "%" in out


def test_sigterm_stops_train_and_prints_its_report(tmp_path):
    path = tmp_path / "term.py"
    path.write_text(TERM)
    p = backtrace_process("train", "--rows", "0", str(path))
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # a few more steps
    os.kill(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143  # 128 + SIGTERM, as a shell reports it
    assert "stopped by SIGTERM: the report of what was recorded" in err
    assert "Traceback" not in err  # Python prints none for SIGTERM either
    steps = int(out.split("optimizer 1: SGD on Sequential, ")[1].split()[0])
    assert steps > 3 and f"{steps} steps" in out and "loss" in out


def test_run_script_restores_sigterm_and_argv(tmp_path):
    from backtrace.scripts import run_script

    path = tmp_path / "s.py"
    path.write_text(textwrap.dedent("""
        import sys
        assert sys.argv[1:] == ["a", "b"]
        raise SystemExit(["not", "a", "number"])
    """))
    before = signal.getsignal(signal.SIGTERM), sys.argv[:]
    run = run_script(path, ["a", "b"])
    assert (signal.getsignal(signal.SIGTERM), sys.argv) == before
    assert run.exit_code == 1 and run.end_text() == "['not', 'a', 'number']\n"
