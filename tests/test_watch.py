"""backtrace.watch on real loops: records against recomputed numbers, each warning with and without
its fault."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import backtrace
from backtrace.errors import UsageError
from backtrace.training.watch import TrainingWarning



@pytest.fixture(autouse=True)
def float64():
    """Double precision for these tests only (the default dtype is global state)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def data(n=200, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g) * scale
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
    return x, y


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))


def loop(model, opt, x, y, steps=20, batch=50, zero=True, w=None, loss_fn=None):
    """A standard loop; returns the loss values it computed."""
    loss_fn = loss_fn or (lambda out, t: ((out - t) ** 2).mean())
    losses = []
    for k in range(steps):
        i = (k * batch) % len(x)
        if zero:
            opt.zero_grad()
        loss = loss_fn(model(x[i:i + batch]), y[i:i + batch])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def assert_healthy_loop_is_quiet(x, y):
    """The control: the same data through a healthy MLP and SGD raises no warning at all."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=2)
    assert w.warnings == []


def kinds(w):
    return [(f.kind, f.layer, f.step) for f in w.warnings]


# ---------------------------------------------------------------- accounting and records

@pytest.mark.parametrize("n,b,spe,last", [(1000, 100, 10, 100), (1050, 100, 11, 50), (7, 10, 1, 7)])
def test_steps_batches_epochs_accounting(n, b, spe, last):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data(25)
    with backtrace.watch(model, opt, dataset_size=n, batch_size=b, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=25, batch=5)
    assert w.steps_per_epoch == spe
    assert [(s.epoch, s.batch) for s in w.steps] == [(k // spe + 1, k % spe + 1) for k in range(25)]
    if n == 1000:
        assert w.accounting.startswith("1000 samples, batch 100 -> 10 steps per epoch")
        assert "after 10 steps every sample has been seen once = 1 epoch" in w.accounting
        assert "25 steps = 2 epochs of 10 steps + 5 steps" in w.summary()
    if last != b:
        assert f"the last batch has {last} sample" in w.accounting


def test_accounting_is_logged_once_at_the_start():
    lines = []
    model = mlp()
    with backtrace.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), dataset_size=1000,
                         batch_size=100, log=lines.append):
        pass
    assert lines == [backtrace.watch(model, None, 1000, 100).accounting]


def test_sgd_records_equal_an_unwatched_replay():
    """Gradient norms and losses equal a second, unwatched run; SGD's update is exactly lr·grad."""
    x, y = data()
    model, ref = mlp(), mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    with backtrace.watch(model, opt) as w:
        losses = loop(model, opt, x, y, steps=6)
    for s in w.steps:
        ref_opt.zero_grad()
        i = ((s.step - 1) * 50) % len(x)
        loss = ((ref(x[i:i + 50]) - y[i:i + 50]) ** 2).mean()
        loss.backward()
        for name, p in ref.named_parameters():
            rec = s.params[name]
            assert math.isclose(rec.grad_norm, p.grad.norm().item(), rel_tol=1e-12)
            assert math.isclose(rec.weight_norm, p.norm().item(), rel_tol=1e-12)
            assert math.isclose(rec.update_norm, 0.05 * rec.grad_norm, rel_tol=1e-9)
            assert math.isclose(rec.ratio, rec.update_norm / rec.weight_norm)
        ref_opt.step()
        assert s.loss == loss.item() == losses[s.step - 1]
        assert s.lr == 0.05
        expected_layer = math.hypot(s.params["0.weight"].grad_norm, s.params["0.bias"].grad_norm)
        assert math.isclose(s.layers["0"], expected_layer, rel_tol=1e-12)
    assert not w.warnings


def test_adam_state_stats_are_the_optimizer_state():
    x, y = data()
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt) as w:
        loop(model, opt, x, y, steps=4)
    last = w.steps[-1]
    for name, p in model.named_parameters():
        state = opt.state[p]
        rec = last.params[name].state
        assert rec["step"] == 4.0
        assert math.isclose(rec["exp_avg"].norm, state["exp_avg"].norm().item(), rel_tol=1e-12)
        assert math.isclose(rec["exp_avg_sq"].absmax, state["exp_avg_sq"].abs().max().item(),
                            rel_tol=1e-12)
        assert rec["exp_avg"].shape == tuple(p.shape)


def test_loss_given_by_hand_after_the_step():
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    given = []
    with backtrace.watch(model, opt, capture_loss=False) as w:
        for k in range(3):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            w.loss(loss * 2)  # after the step: it belongs to that step
            given.append(2 * loss.item())
    assert [s.loss for s in w.steps] == given


def test_loss_given_before_the_step_and_captured():
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    captured = []
    with backtrace.watch(model, opt) as w:
        for k in range(3):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()  # captured
            captured.append(loss.item())
            opt.step()
    assert [s.loss for s in w.steps] == captured
    with backtrace.watch(model, opt, capture_loss=False) as w:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        w.loss(7.0)  # between backward and step: for the coming step
        opt.step()
    assert w.steps[0].loss == 7.0


def test_detach_restores_backward_and_removes_hooks():
    original = torch.Tensor.backward
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with backtrace.watch(model, opt) as w:
        assert torch.Tensor.backward is not original
    assert torch.Tensor.backward is original
    x, y = data()
    loop(model, opt, x, y, steps=2)
    assert list(w.steps) == [] and w.step_count == 0


def test_bad_arguments():
    with pytest.raises(UsageError):
        backtrace.watch(mlp(), None, dataset_size=100)
    with pytest.raises(UsageError):
        backtrace.watch({"w": torch.zeros(2)})  # nothing requires grad


# ---------------------------------------------------------------- each warning: fault vs no fault

class LinearRegression:
    """The lecture's low-level model: w and b by hand."""

    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.w = torch.randn(3, 1, generator=g, requires_grad=True)
        self.b = torch.randn(1, generator=g, requires_grad=True)

    def forward(self, x):
        return x @ self.w + self.b


def manual_loop(zero: bool, lr=0.05, steps=8):
    x, y = data()
    m = LinearRegression()
    with backtrace.watch(m, log=lambda s: None) as w:
        for _ in range(steps):
            loss = ((m.forward(x) - y) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                m.w -= lr * m.w.grad
                m.b -= lr * m.b.grad
                if zero:
                    m.w.grad.zero_()
                    m.b.grad.zero_()
            w.step(loss)
    return w


def test_not_zeroed_manual_loop():
    bad, good = manual_loop(zero=False), manual_loop(zero=True)
    assert ("not-zeroed", "w", 2) in kinds(bad) and ("not-zeroed", "b", 2) in kinds(bad)
    msg = next(f.message for f in bad.warnings if f.layer == "w")
    assert msg.startswith("step 2: the gradient of w was not zeroed after step 1")
    assert bad.counts[("not-zeroed", "w")] == 7  # steps 2..8
    assert good.warnings == []
    # the recorded gradient of step 2 is the sum of the two backward passes (the fault itself)
    assert bad.steps[1].params["w"].grad_norm > good.steps[1].params["w"].grad_norm


def test_not_zeroed_optimizer_loop_but_accumulation_on_purpose_is_fine():
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=4, zero=False)
    assert ("not-zeroed", "0", 2) in kinds(w)
    msg = next(f.message for f in w.warnings if f.layer == "0")
    assert msg.startswith("step 2: the gradient of layer 0 (Linear) ")  # weight or bias
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        for _ in range(4):  # two backward passes per step, zeroed once: deliberate accumulation
            opt.zero_grad()
            ((model(x[:50]) - y[:50]) ** 2).mean().backward()
            ((model(x[50:100]) - y[50:100]) ** 2).mean().backward()
            opt.step()
    assert w.warnings == []


def test_non_finite_gradient_names_layer_and_step():
    x, y = data()
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    fault = lambda out, t: torch.sqrt(((out - t) ** 2).mean() - 1e9)  # noqa: E731 (sqrt of < 0)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=2, loss_fn=fault)
    found = [f for f in w.warnings if f.kind == "non-finite"]
    assert {f.layer for f in found} >= {"0", "2", "loss"}
    assert all(f.step == 1 for f in found)
    assert any("step 1: the gradient of layer 2 (Linear)" in f.message for f in found)
    assert_healthy_loop_is_quiet(x, y)


def test_exploding_gradients():
    x, y = data(scale=300.0)  # inputs of size 300: gradients of size ~1e5
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-9)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=2)
    assert ("exploding", "0", 1) in kinds(w)
    norm = w.steps[0].layers["0"]
    assert norm > 1e3 and f"norm {norm:.3g} > 1000" in w.warnings[0].message
    x, y = data()
    assert_healthy_loop_is_quiet(x, y)


def deep(activation, depth=12, seed=0):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(3, 3), activation()]
    return nn.Sequential(*layers, nn.Linear(3, 1))


def test_vanishing_gradients_in_a_deep_sigmoid_net():
    x, y = data()
    model = deep(nn.Sigmoid)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=2)
    vanishing = [f for f in w.warnings if f.kind == "vanishing"]
    assert vanishing and vanishing[0].layer == "0" and vanishing[0].step == 1
    s = w.steps[0]
    assert s.layers["0"] < 1e-4 * max(s.layers.values())  # the oracle: the recorded norms
    assert_healthy_loop_is_quiet(x, y)


def test_loss_rising_because_of_the_learning_rate():
    x, y = data(scale=3.0)
    found = {}
    for lr in (0.3, 0.001):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        with backtrace.watch(model, opt, dataset_size=200, batch_size=50,
                             log=lambda s: None) as w:
            losses = loop(model, opt, x, y, steps=12)
        found[lr] = (w, losses)
    w, losses = found[0.3]
    rising = [f for f in w.warnings if f.kind == "loss-rising"]
    assert rising and "the learning rate 0.3 is probably too large" in rising[0].message
    assert max(losses) > 10 * losses[0]  # it really did rise
    w, losses = found[0.001]
    assert w.warnings == [] and losses[-1] < losses[0]


def test_dead_relu_layer():
    x, y = data()
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every pre-activation negative: ReLU outputs all zero
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=3)
    dead = [f for f in w.warnings if f.kind == "dead-relu"]
    assert [(f.layer, f.step) for f in dead] == [("1", 1)]
    assert w.steps[0].relu_zero == {"1": 1.0}
    assert w.steps[0].params["0.weight"].grad_norm == 0.0  # no gradient flows through it
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, log=lambda s: None) as w:
        loop(model, opt, x, y, steps=3)
    assert not [f for f in w.warnings if f.kind == "dead-relu"]
    assert 0 < w.steps[0].relu_zero["1"] < 1


def test_warnings_go_through_the_warnings_module_without_log():
    with pytest.warns(TrainingWarning, match="was not zeroed") as caught:
        x, y = data()
        m = LinearRegression()
        with backtrace.watch(m) as w:
            for _ in range(2):
                ((m.forward(x) - y) ** 2).mean().backward()
                with torch.no_grad():
                    m.w -= 0.01 * m.w.grad
                w.step()  # the line the warning points at
    assert caught[0].filename == __file__
    assert "w.step()" in open(__file__).read().splitlines()[caught[0].lineno - 1]
    model = mlp()  # through an optimizer's step hook: still the user's line
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.warns(TrainingWarning, match="was not zeroed") as caught:
        with backtrace.watch(model, opt):
            loop(model, opt, x, y, steps=2, zero=False)
    assert caught[0].filename == __file__
    assert "opt.step()" in open(__file__).read().splitlines()[caught[0].lineno - 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manual_loop(zero=True)


def test_views_render():
    from tests.conftest import render_text

    w = manual_loop(zero=False)
    text = render_text(w.table())
    assert text.split("\n")[0].split() == ["step", "epoch", "batch", "loss", "lr", "‖∂L/∂W‖",
                                           "max", "‖ΔW‖/‖W‖"]
    assert len([line for line in text.splitlines() if line.strip()]) == 1 + 8
    assert "w" in render_text(w.layer_table()) and "loss" in w.loss_curve()
    assert "(and at 6 more steps)" in w.summary()
