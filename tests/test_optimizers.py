"""The visible optimizers against torch.optim: same trajectories in float64, to 1e-12."""
from __future__ import annotations

import math

import pytest
import torch

from backtrace.errors import UsageError
from backtrace.training import descend
from backtrace.training.optimizers import SGD, Adam, make_schedule

TOL = 1e-12

# A non-convex loss of two variables, written once as a formula and once for torch.
FORMULA = "L = x**4 - 3*x**2 + x + y**2*x + sin(y)"


def torch_loss(x, y):
    return x**4 - 3 * x**2 + x + y**2 * x + torch.sin(y)


def torch_path(make_opt, start, steps, loss=torch_loss, lrs=None):
    """Positions after each torch.optim step, float64, zeroing gradients every step."""
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in start]
    opt = make_opt(params)
    path = []
    for k in range(steps):
        if lrs is not None:
            for g in opt.param_groups:
                g["lr"] = lrs[k]
        opt.zero_grad()
        loss(*params).backward()
        opt.step()
        path.append([p.item() for p in params])
    return path


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


CASES = [
    ("sgd", 0.01, lambda p: torch.optim.SGD(p, lr=0.01)),
    ("momentum", 0.01, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)),
    ("adam", 0.05, lambda p: torch.optim.Adam(p, lr=0.05)),
    ("adam", 0.05, lambda p: torch.optim.Adam(p, lr=0.05, foreach=False)),
]


@pytest.mark.parametrize("name,lr,make", CASES)
def test_step_table_equals_torch_trajectory(name, lr, make):
    d = descend(FORMULA, {"x": 1.7, "y": -0.3}, lr=lr, steps=80, optimizer=name)
    expected = torch_path(make, (1.7, -0.3), 80)
    assert len(d.steps) == 80
    for s, (tx, ty) in zip(d.steps, expected):
        assert close(s.after["x"], tx) and close(s.after["y"], ty), (s.step, s.after, tx, ty)
        # the table's columns are consistent: new = old + update
        assert all(s.after[n] == s.before[n] + s.updates[n].delta for n in s.before)


def test_gradients_in_the_table_are_torch_gradients():
    d = descend(FORMULA, {"x": 0.4, "y": 1.1}, lr=0.02, steps=5, optimizer="sgd")
    for s in d.steps:
        x, y = (torch.tensor(s.before[n], dtype=torch.float64, requires_grad=True) for n in "xy")
        torch_loss(x, y).backward()
        assert close(s.grads["x"], x.grad.item()) and close(s.grads["y"], y.grad.item())


def test_adam_parts_are_the_bias_corrected_moments():
    """m̂, v̂ and step as shown equal torch's state after the same step, and step = lr·m̂/(√v̂+ε)."""
    d = descend("L = (w - 3)**2 * (w + 1)**2", {"w": 0.5}, lr=0.1, steps=12, optimizer="adam")
    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    for k, s in enumerate(d.steps, start=1):
        opt.zero_grad()
        ((w - 3) ** 2 * (w + 1) ** 2).backward()
        opt.step()
        state = opt.state[w]
        parts = s.updates["w"].parts
        assert close(parts["m"], state["exp_avg"].item())
        assert close(parts["v"], state["exp_avg_sq"].item())
        assert close(parts["m̂"], state["exp_avg"].item() / (1 - 0.9**k))
        assert close(parts["v̂"], state["exp_avg_sq"].item() / (1 - 0.999**k))
        assert close(parts["step"], 0.1 * parts["m̂"] / (math.sqrt(parts["v̂"]) + 1e-8))
        assert close(s.after["w"], w.item())


@pytest.mark.parametrize("kwargs", [
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, dampening=0.3),
    dict(momentum=0.9, weight_decay=0.01),
])
def test_sgd_variants_equal_torch(kwargs):
    opt = SGD(**kwargs)
    values = {"x": 1.2, "y": -0.7}
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values.values()]
    ref = torch.optim.SGD(params, lr=0.03, **kwargs)
    for _ in range(40):
        ref.zero_grad()
        torch_loss(*params).backward()
        grads = {n: p.grad.item() for n, p in zip(values, params)}
        values = {n: v + u.delta for (n, v), u in zip(values.items(), opt.step(values, grads, 0.03).values())}
        ref.step()
        assert all(close(values[n], p.item()) for n, p in zip(values, params))


def test_adam_weight_decay_equals_torch():
    opt = Adam(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    values = {"x": 1.2, "y": -0.7}
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values.values()]
    ref = torch.optim.Adam(params, lr=0.07, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for _ in range(40):
        ref.zero_grad()
        torch_loss(*params).backward()
        grads = {n: p.grad.item() for n, p in zip(values, params)}
        ups = opt.step(values, grads, 0.07)
        values = {n: values[n] + ups[n].delta for n in values}
        ref.step()
        assert all(close(values[n], p.item()) for n, p in zip(values, params))


@pytest.mark.parametrize("name,make", [
    ("step", lambda o, n: torch.optim.lr_scheduler.StepLR(o, step_size=max(1, n // 4), gamma=0.5)),
    ("cosine", lambda o, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n)),
])
def test_schedules_equal_torch_schedulers(name, make):
    steps = 37
    rate = make_schedule(name, 0.3, steps)
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.3)
    sched = make(opt, steps)
    for k in range(steps):
        assert math.isclose(rate(k), opt.param_groups[0]["lr"], rel_tol=1e-12, abs_tol=1e-15), k
        opt.step()
        sched.step()


def test_scheduled_descent_equals_torch_with_scheduler():
    d = descend(FORMULA, {"x": 1.7, "y": -0.3}, lr=0.05, steps=30, optimizer="adam",
                schedule="cosine")
    lrs = [s.lr for s in d.steps]
    expected = torch_path(lambda p: torch.optim.Adam(p, lr=0.05), (1.7, -0.3), 30, lrs=lrs)
    assert lrs[0] == 0.05 and lrs[-1] < 0.001
    for s, (tx, ty) in zip(d.steps, expected):
        assert close(s.after["x"], tx) and close(s.after["y"], ty)


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError):
        SGD(momentum=-1)
    with pytest.raises(UsageError):
        SGD(nesterov=True)
    with pytest.raises(UsageError):
        Adam(betas=(1.0, 0.9))
    with pytest.raises(UsageError):
        make_schedule("exponential", 0.1, 10)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=15, deadline=None)
@given(x0=st.floats(-2, 2), y0=st.floats(-2, 2), lr=st.floats(1e-3, 0.3),
       name=st.sampled_from(["sgd", "momentum", "adam"]))
def test_random_starts_and_rates_equal_torch(x0, y0, lr, name):
    """A bounded-slope loss, so no run overflows: every step must match torch.optim."""
    formula = "L = sin(x)*cos(y) + 0.1*(x**2 + y**2)"
    d = descend(formula, {"x": x0, "y": y0}, lr=lr, steps=25, optimizer=name)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=lr),
            "momentum": lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=lr)}[name]
    loss = lambda x, y: torch.sin(x) * torch.cos(y) + 0.1 * (x**2 + y**2)  # noqa: E731
    for s, (tx, ty) in zip(d.steps, torch_path(make, (x0, y0), 25, loss=loss)):
        assert close(s.after["x"], tx) and close(s.after["y"], ty)
