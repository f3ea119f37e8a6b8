"""Shared fixtures: the lecture's textbook formulas with their hand-derived answers."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

# f = (x + y) * z at (-2, 5, -4): lecture 4, section 4.2.
TEXTBOOK = ("f=(x+y)*z", {"x": -2.0, "y": 5.0, "z": -4.0})
# The sigmoid neuron of CS231n: f = 1/(1+exp(-(w0*x0+w1*x1+w2))).
NEURON = ("1/(1+exp(-(w0*x0+w1*x1+w2)))",
          {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0})


EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str) -> str:
    """Run examples/NAME in a fresh interpreter, as a reader would, and return what it printed."""
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render_text(renderable, width: int = 100) -> str:
    """What a renderable prints on a plain 100-column console (text, such as Markdown, as it is)."""
    if isinstance(renderable, str):
        return renderable
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


@pytest.fixture
def textbook():
    return TEXTBOOK


@pytest.fixture
def neuron():
    return NEURON
