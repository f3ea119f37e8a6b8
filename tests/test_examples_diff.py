"""examples/diff_runs.py runs as a reader would, and `backtrace diff` finds its 1% bug."""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import EXAMPLES


def test_diff_runs_example_saves_three_runs_and_names_the_bug(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "diff_runs.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "first: %11 swish in 1 (local), relative error 0.0100" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16.json", "fp32.json", "off.json"]
    cli = [sys.executable, "-m", "backtrace", "diff", str(tmp_path / "fp32.json")]
    off = subprocess.run([*cli, str(tmp_path / "off.json")], capture_output=True, text=True,
                         timeout=60)
    assert off.returncode == 1 and "to %10 linear  [32×16]" in off.stdout
    bf16 = subprocess.run([*cli, str(tmp_path / "bf16.json"), "--format", "json"],
                          capture_output=True, text=True, timeout=60)
    first = json.loads(bf16.stdout)["first"]
    assert (first["op"], first["module"], first["what"]) == ("linear", "0.fc", "value")
    assert first["b"]["dtype"] == "bfloat16"
