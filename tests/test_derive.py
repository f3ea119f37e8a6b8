"""Chain-rule derivations: the lecture's lines, and sums over paths."""
from __future__ import annotations

from backtrace import explain
from backtrace.derive import derivations, product
from backtrace.render.terminal import derivation_line


def test_lecture_lines():
    t = explain("q = x + y; f = q * z", x=-2, y=5, z=-4)
    lines = [derivation_line(d) for d in derivations(t)]
    assert lines == [
        "∂f/∂x = ∂f/∂q · ∂q/∂x = (-4) · (1) = -4",
        "∂f/∂y = ∂f/∂q · ∂q/∂y = (-4) · (1) = -4",
        "∂f/∂z = ∂f/∂z = (3) = 3",
    ]


def test_every_path_is_listed_and_sums_to_the_gradient():
    t = explain("a = x * x; b = x + 1; f = a * b", x=3)
    (d,) = derivations(t)
    assert d.total_paths == 3
    assert sum(product(p) for p in d.paths) == d.grad == 33.0
    assert derivation_line(d) == ("∂f/∂x = ∂f/∂a · ∂a/∂x[slot 0] + ∂f/∂a · ∂a/∂x[slot 1] + "
                                  "∂f/∂b · ∂b/∂x = (4) · (3) + (4) · (3) + (9) · (1) = "
                                  "(12) + (12) + (9) = 33")


def test_paths_are_capped_but_counted():
    # x feeds each of 12 chained products twice: 2**12 paths, only the first few are listed.
    formula = "; ".join(["y0 = x"] + [f"y{i} = y{i - 1} * x + y{i - 1}" for i in range(1, 13)])
    t = explain(formula, x=0.5)
    (d,) = derivations(t, max_paths=4)
    assert len(d.paths) == 4 and d.total_paths > 4
    assert "more paths" in derivation_line(d)


def test_unreachable_input():
    t = explain("u = y * 2; f = x * 3", x=1, y=1)
    lines = {d.input: derivation_line(d) for d in derivations(t)}
    assert lines["y"] == "∂f/∂y = 0 (no path from y to f)"
    assert lines["x"] == "∂f/∂x = ∂f/∂x = (3) = 3"
