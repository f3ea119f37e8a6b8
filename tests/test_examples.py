"""The foundation's example scripts run and print the lecture's numbers."""
from __future__ import annotations

from .conftest import run_example


def test_chain_rule_example_prints_the_lecture_numbers():
    out = run_example("chain_rule.py")
    assert "∂f/∂x = ∂f/∂q · ∂q/∂x = (-4) · (1) = -4" in out
    assert "at f: ∂f/∂q = z = -4; -4 × upstream 1 = -4 sent to q" in out
    assert "Value API: f = -12, ∂f/∂x = -4, ∂f/∂y = -4, ∂f/∂z = 3" in out
