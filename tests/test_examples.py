"""The foundation's example scripts run and print the lecture's numbers."""
from __future__ import annotations

from .conftest import run_example


def test_chain_rule_example_prints_the_lecture_numbers():
    out = run_example("chain_rule.py")
    assert "∂f/∂x = ∂f/∂q · ∂q/∂x = (-4) · (1) = -4" in out
    assert "at f: ∂f/∂q = z = -4; -4 × upstream 1 = -4 sent to q" in out
    assert "Value API: f = -12, ∂f/∂x = -4, ∂f/∂y = -4, ∂f/∂z = 3" in out


def test_lecture_network_example_prints_torchs_numbers():
    """One gradient-descent step on the lecture's network, the losses checked against torch."""
    import torch

    from tests.test_tensors import VALUES

    out = run_example("lecture_network.py")
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in VALUES.items() if k != "y"}

    def loss():
        z = torch.relu(t["x"] @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
        return torch.nn.functional.cross_entropy(z, torch.tensor(0))

    before = loss()
    before.backward()
    with torch.no_grad():
        for k in ("W1", "b1", "W2", "b2"):
            t[k] -= 0.1 * t[k].grad
    assert f"loss {before.item():.6f} -> {loss().item():.6f}" in out
    assert "engines agree" in out and "∂L/∂W1 [3×4] = xᵀ [3×1] · ∂L/∂%0 [1×4]" in out
    assert "∂L/∂z = p − onehot(0) = [-0.8394, 0.6716, 0.1678]" in out
