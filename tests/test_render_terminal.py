"""Golden renders of the explain view, on a 100-column console without colour."""
from __future__ import annotations

from pathlib import Path

import pytest

from backtrace import explain
from backtrace.render.formats import FORMATS, view
from backtrace.render.terminal import MAX_ROWS, ExplainView

from .conftest import NEURON, TEXTBOOK, render_text

GOLDEN = Path(__file__).parent / "golden"
CASES = {"textbook": TEXTBOOK, "neuron": NEURON,
         "fanout": ("a = x * x; b = x + 1; f = a * b", {"x": 3.0}),
         # the lecture's network on its sample, with a batch-free broadcast-free layout (tensors)
         "lecture": ("h = relu(x @ W1 + b1); z = h @ W2 + b2; L = cross_entropy(z, y)",
                     {"x": [1.4, 2.7, 1.9],
                      "W1": [[0.2, -0.5, 0.1, 0.4], [-0.3, 0.8, 0.2, -0.1], [0.5, 0.1, -0.6, 0.3]],
                      "b1": [0.1, 0.0, -0.1, 0.2],
                      "W2": [[0.3, -0.2, 0.1], [-0.4, 0.5, 0.2], [0.6, -0.1, -0.3], [0.2, 0.3, -0.5]],
                      "b2": [0.0, 0.1, -0.1], "y": 0}),
         # a batch of two: b broadcast over the rows is a step of its own
         "batch": ("L = mean((x @ W + b - t)**2)",
                   {"x": [[1.0, 2.0], [3.0, -1.0]], "W": [[0.3, -0.2], [0.1, 0.4]],
                    "b": [0.05, -0.1], "t": [[1.0, 0.0], [0.0, 1.0]]})}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("style", ["table", "plain", "markdown"])
def test_golden(case, style):
    formula, values = CASES[case]
    made = view(explain(formula, **values), style)
    text = made if isinstance(made, str) else render_text(made)  # markdown is text: never wrapped
    golden = GOLDEN / f"explain_{case}_{style}.txt"
    assert text == golden.read_text(encoding="utf-8")


def test_fan_in_sum_is_shown_in_the_upstream_column():
    text = render_text(view(explain(*CASES["fanout"][:1], **CASES["fanout"][1]), "plain"))
    assert "(12) + (12) + (9) = 33" in text


def test_step_view_reveals_steps_one_by_one():
    t = explain(TEXTBOOK[0], **TEXTBOOK[1])
    first = render_text(ExplainView(t, "plain", upto=1))
    assert "∂f/∂%0 = z" in first and "∂%0/∂x" not in first and "Gradients" not in first


def test_big_traces_are_cut_with_a_note():
    formula = "+".join(f"x{i}" for i in range(MAX_ROWS + 50))
    t = explain(formula, **{f"x{i}": 1.0 for i in range(MAX_ROWS + 50)})
    text = render_text(view(t, "plain"))
    assert "more nodes" in text and "more steps" in text


def test_every_format_is_registered_with_help():
    assert set(FORMATS) >= {"table", "plain", "markdown", "json"}
    assert all(f.help for f in FORMATS.values())
