"""watch over long runs and under the tools of real training: clipping, AMP's GradScaler, functional
activations, bounded memory, one transfer per step, the layer × step heatmap. Each number is
checked against a replay of the same step without backtrace."""
from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import backtrace
from backtrace.training.activations import CUTOFFS, DERIVATIVE
from backtrace.training.records import Series


def quiet():
    return {"log": lambda s: None}


def data(n=64, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=dtype) * scale
    return x, x @ torch.tensor([[1.5], [-2.0], [0.5]], dtype=dtype) + 0.3


def mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)).to(dtype)


def mse(out, y):
    return ((out - y) ** 2).mean()


# ---------------------------------------------------------------- clipping

def clipped_run(clip: float | None, steps: int = 2):
    x, y = data(scale=300.0)  # gradients of size ~1e5
    model = mlp()
    replay = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-9)
    with backtrace.watch(model, opt, **quiet()) as w:
        for _ in range(steps):
            opt.zero_grad()
            mse(model(x), y).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    return w, replay, x, y


def test_clipping_records_both_norms_and_warns():
    w, replay, x, y = clipped_run(clip=1.0)
    mse(replay(x), y).backward()  # step 1 unclipped, from the same weights
    s = w.steps[0]
    raw = math.hypot(*(p.grad.norm().item() for p in replay.parameters()))
    assert s.grad_norm == pytest.approx(raw, rel=1e-12) and raw > 1e4
    assert s.stepped_norm == pytest.approx(1.0, rel=1e-5)  # what clip_grad_norm_ left
    for name, p in replay.named_parameters():
        rec = s.params[name]
        assert rec.backward_norm == pytest.approx(p.grad.norm().item(), rel=1e-12)
        assert rec.grad_norm == pytest.approx(p.grad.norm().item() / raw, rel=1e-5)
    found = {f.kind: f for f in w.warnings}
    assert f"clipping cut the gradient norm from {raw:.3g}" in found["clipped"].message
    assert f"a factor {raw:.3g}" in found["clipped"].message
    assert "exploding" in found  # measured before clipping: not hidden
    from tests.conftest import render_text

    head = render_text(w.table()).splitlines()[0].split()
    assert head[5:7] == ["‖∂L/∂W‖", "stepped"]


def test_no_clipping_no_clipped_warning_and_no_extra_column():
    from tests.conftest import render_text

    w, *_ = clipped_run(clip=None)
    assert "clipped" not in {f.kind for f in w.warnings}
    assert all(s.stepped_norm == pytest.approx(s.grad_norm, rel=1e-12) for s in w.steps)
    assert "stepped" not in render_text(w.table())


def test_tracer_grads_are_the_gradient_backward_produced_before_clipping():
    x, y = data(scale=300.0)
    model = mlp()
    with backtrace.trace(model=model, level="full") as t:
        mse(model(x), y).backward()
    produced = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for name, p in model.named_parameters():
        assert torch.equal(t.trace.grads[name], produced[name])  # what backward gave .grad
        assert not torch.equal(t.trace.grads[name], p.grad)  # clipping changed .grad after


# ---------------------------------------------------------------- weights at zero, huge norms

def test_update_ratio_of_zero_weights_is_undefined_not_inf():
    from tests.conftest import render_text

    x, y = data()
    model = mlp()
    with torch.no_grad():
        model[0].bias.zero_()  # nearly every model starts its biases at zero
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with backtrace.watch(model, opt, **quiet()) as w:
        opt.zero_grad()
        mse(model(x), y).backward()
        opt.step()
    s = w.steps[0]
    assert s.params["0.bias"].ratio is None and s.params["0.bias"].update_norm > 0
    ratios = [p.update_norm / p.weight_norm for p in s.params.values() if p.weight_norm]
    assert s.max_ratio == pytest.approx(max(ratios), rel=1e-12) and math.isfinite(s.max_ratio)
    assert "inf" not in render_text(w.table()) + render_text(w.layer_table())


def test_norms_past_1e154_combine_without_overflow():
    layer = nn.Sequential(nn.Linear(1, 1)).double()  # two one-element parameters, one layer
    with backtrace.watch(layer, **quiet()) as w:
        for p in layer.parameters():
            p.grad = torch.full_like(p, 1e200)  # each norm finite; their squares are not
        w.step()
    s = w.steps[0]
    assert s.layers["0"] == pytest.approx(math.sqrt(2) * 1e200, rel=1e-12)
    assert s.grad_norm == pytest.approx(math.sqrt(2) * 1e200, rel=1e-12)
    assert [(f.kind, f.layer) for f in w.warnings] == [("exploding", "0")]
    assert "norm 1.41e+200 > 1000" in w.warnings[0].message


# ---------------------------------------------------------------- AMP's GradScaler

def amp_run(inf_at: int | None = None, clip: float | None = None, steps: int = 3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = data(dtype=torch.float32)
    replays, losses = [], []
    with backtrace.watch(model, opt, **quiet()) as w:
        for k in range(steps):
            replays.append(copy.deepcopy(model))
            opt.zero_grad()
            loss = mse(model(x), y) * (math.inf if k == inf_at else 1.0)
            scaler.scale(loss).backward()
            if clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
    return w, replays, losses, (x, y)


def test_gradscaler_gradients_and_loss_are_unscaled():
    w, replays, losses, (x, y) = amp_run()
    for s, replay, loss in zip(w.steps, replays, losses):
        mse(replay(x), y).backward()  # the same step without the scaler
        assert s.scale == 1024.0 and not s.skipped
        assert s.loss == pytest.approx(loss, rel=1e-6)  # not loss × 1024
        for name, p in replay.named_parameters():
            assert s.params[name].backward_norm == pytest.approx(p.grad.norm().item(), rel=1e-5)
            assert s.params[name].grad_norm == pytest.approx(p.grad.norm().item(), rel=1e-5)
    assert not w.warnings


def test_gradscaler_skipped_step_is_recorded_and_said():
    w, replays, losses, _ = amp_run(inf_at=1)
    assert [s.skipped for s in w.steps] == [False, True, False]
    assert [s.scale for s in w.steps] == [1024.0, 1024.0, 512.0]  # it backed off after the skip
    skipped = w.steps[1]
    assert all(p.update_norm == 0.0 and p.grad_norm is None for p in skipped.params.values())
    found = [f for f in w.warnings if f.kind == "amp-skipped"]
    assert [(f.step, f.layer) for f in found] == [(2, "GradScaler")]
    assert "skipped the update" in found[0].message and "scale 1024" in found[0].message
    assert "1 of them skipped by GradScaler" in w.summary() and w.step_count == 3
    assert not [f for f in w.warnings if f.kind == "exploding"]


def test_gradscaler_with_unscale_and_clipping():
    w, replays, losses, (x, y) = amp_run(clip=0.1)
    s, replay = w.steps[0], replays[0]
    mse(replay(x), y).backward()
    raw = math.hypot(*(p.grad.norm().item() for p in replay.parameters()))
    assert s.grad_norm == pytest.approx(raw, rel=1e-5)  # unscaled, before clipping
    assert s.stepped_norm == pytest.approx(0.1, rel=1e-4)


def test_backtrace_train_sees_a_gradscaler(tmp_path):
    from click.testing import CliRunner

    from backtrace.cli import cli

    script = tmp_path / "amp.py"
    script.write_text(
        "import math, torch\ntorch.manual_seed(0)\n"
        "m = torch.nn.Linear(3, 1)\nopt = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "scaler = torch.amp.GradScaler('cpu', init_scale=256.0)\nx = torch.randn(8, 3)\n"
        "for k in range(3):\n    opt.zero_grad()\n"
        "    loss = m(x).pow(2).mean() * (math.inf if k == 0 else 1.0)\n"
        "    scaler.scale(loss).backward()\n    scaler.step(opt)\n    scaler.update()\n")
    r = CliRunner().invoke(cli, ["train", str(script)])
    assert r.exit_code == 0, r.output
    assert "optimizer 1: SGD on Linear, 3 steps" in r.output  # the skipped first step counts
    assert "step 1: GradScaler skipped the update" in r.output
    assert re.search(r"^\s+1\s.*\s256\s+skipped$", r.stdout, re.M)


# ---------------------------------------------------------------- activations used functionally

class Functional(nn.Module):
    def __init__(self, act, bias=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.act = nn.Linear(3, 8).double(), nn.Linear(8, 1).double(), act
        with torch.no_grad():
            self.fc1.bias.fill_(bias)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, bias):
        super().__init__()
        self.inner = Functional(lambda h: torch.relu(h), bias)

    def forward(self, x):
        return self.inner(x)


def watched(model, steps=2, **options):
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, **quiet(), **options) as w:
        for _ in range(steps):
            opt.zero_grad()
            mse(model(x), y).backward()
            opt.step()
    return w


@pytest.mark.parametrize("act", [F.relu, torch.relu, lambda h: h.relu(), lambda h: F.relu(h, True),
                                 torch.relu_])
def test_dead_relu_called_functionally(act):
    w = watched(Functional(act, bias=-100.0))
    dead = [f for f in w.warnings if f.kind == "dead-relu"]
    assert [(f.layer, f.step) for f in dead] == [("relu", 1)]
    assert "every output of relu() called in the model is zero" in dead[0].message
    assert w.steps[0].relu_zero == {"relu": 1.0}
    healthy = watched(Functional(act, bias=0.0))
    x, _ = data()
    share = (F.relu(healthy_model_fc1_out(x)) == 0).double().mean().item()
    assert healthy.steps[0].relu_zero["relu"] == pytest.approx(share, rel=1e-12)
    assert not [f for f in healthy.warnings if f.kind == "dead-relu"]


def healthy_model_fc1_out(x):
    return Functional(F.relu).fc1(x)  # the same seed: the first step's pre-activations


def test_dead_relu_site_inside_a_submodule_and_its_module_named():
    w = watched(Block(bias=-100.0))
    dead = [f for f in w.warnings if f.kind.startswith("dead")]
    assert [(f.kind, f.layer) for f in dead] == [("dead-relu", "inner:relu")]
    assert "relu() called in inner (Functional)" in dead[0].message


@pytest.mark.parametrize("name,act", [("gelu", F.gelu), ("silu", F.silu), ("mish", F.mish),
                                      ("gelu", lambda h: F.gelu(h, approximate="tanh"))])
def test_dead_gelu_family_called_functionally(name, act):
    w = watched(Functional(act, bias=-100.0))
    dead = [f for f in w.warnings if f.kind == "dead-activation"]
    assert [(f.layer, f.step) for f in dead] == [(name, 1)]
    assert f"every input of {name}() called in the model is below {CUTOFFS[name]:g}" \
        in dead[0].message
    assert not [f for f in watched(Functional(act)).warnings if f.kind == "dead-activation"]


def test_activation_modules_are_named_by_their_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.GELU(), nn.Linear(8, 1)).double()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    w = watched(model)
    dead = [f for f in w.warnings if f.kind.startswith("dead")]
    assert [(f.kind, f.layer) for f in dead] == [("dead-activation", "1")]
    assert "every input of GELU layer 1 is below -3.82" in dead[0].message


def test_eval_and_no_grad_forwards_are_not_counted():
    model = Functional(F.relu, bias=-100.0)
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.watch(model, opt, **quiet()) as w:
        with torch.no_grad():
            model(x)
        model.eval()
        model(x)
        w.step()
    assert w.steps[0].relu_zero == {} and not w.warnings


@pytest.mark.parametrize("name", sorted(CUTOFFS))
def test_cutoffs_are_where_the_derivative_falls_below_the_threshold(name):
    f = {"gelu": F.gelu, "silu": F.silu, "mish": F.mish}[name]
    x = torch.linspace(-40, CUTOFFS[name], 20001, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    assert g.abs().max() < DERIVATIVE  # dead below the cutoff ...
    x = torch.tensor(CUTOFFS[name] + 0.2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f(x), x)
    assert abs(g) > DERIVATIVE  # ... and the cutoff is not far too low


# ---------------------------------------------------------------- long runs in bounded memory

def rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_twenty_thousand_steps_in_a_fixed_memory_bound():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    with backtrace.watch(model, **quiet()) as w:
        for k in range(20_000):
            loss = mse(model(x), y)
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.01 * p.grad
                    p.grad = None
            w.step()
            if k == 1_999:
                start = rss()
    grown = rss() - start
    # keeping every step (as before) took ~1.3 KB per parameter tensor per step: 47 MB here
    assert grown < 4 * 2**20, f"grew {grown / 2**20:.1f} MB over 18,000 steps"
    assert w.step_count == 20_000 and len(w.steps) == 1000
    assert [s.step for s in (w.steps[0], w.steps[-1])] == [19_001, 20_000]
    data_ = w.summary_data
    assert len(data_.loss) <= data_.loss.capacity and data_.first_loss is not None
    assert data_.lowest_loss[1] <= min(s.loss for s in w.steps)
    assert w.loss_curve().splitlines()[-1].split()[:2] == ["1", "20000"]
    assert "the last 1000 steps are kept in detail" in w.summary()


def test_series_buckets_are_means_of_their_steps():
    s = Series(capacity=8)
    for step in range(1, 101):
        s.add(step, float(step) if step != 50 else math.nan)
        s.add(step, None)  # nothing measured: no effect on the means
    assert len(s) <= 8 and s.span == 16
    for first, mean in zip(s.first, s.values()):
        steps = range(first, min(first + s.span, 101))
        if 50 in steps:
            assert math.isnan(mean)  # a NaN is never averaged away
        else:
            assert mean == pytest.approx(sum(steps) / len(steps))
    assert s.first[0] == 1 and s.last() >= 100


# ---------------------------------------------------------------- one transfer per step

def test_each_step_reads_the_device_once(monkeypatch):
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data()
    calls = []
    for attr in ("tolist", "item", "__float__", "__bool__", "cpu", "numpy"):
        original = getattr(torch.Tensor, attr)

        def counting(self, *a, _original=original, _attr=attr, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("backtrace"):  # ours, not torch.optim's own
                calls.append(_attr)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, counting)
    with backtrace.watch(model, opt, **quiet()) as w:
        for _ in range(3):
            calls.clear()
            opt.zero_grad()
            mse(model(x), y).backward()
            opt.step()
            assert calls == ["tolist"], calls  # loss, norms, zeros, Adam's state, ReLU: one read
    assert w.steps[-1].params["0.weight"].state["exp_avg"].norm > 0
    assert w.steps[-1].relu_zero["1"] > 0


# ---------------------------------------------------------------- the layer × step heatmap

def test_heatmap_cells_are_the_layers_gradient_rms_per_step():
    from backtrace.training.heatmap import grid

    w = watched(mlp(), steps=6)
    layers, starts, cells = grid(w, "rms", 100)
    assert layers == ["0", "2"] and starts == [1, 2, 3, 4, 5, 6]
    for j, s in enumerate(w.steps):
        for layer, row in zip(layers, cells):
            recs = [p for p in s.params.values() if p.layer == layer]
            expected = math.hypot(*(p.backward_norm for p in recs)) / math.sqrt(
                sum(p.numel for p in recs))
            assert row[j] == pytest.approx(expected, rel=1e-12)
    _, _, zeros = grid(w, "zeros", 100)
    assert zeros[1][0] == pytest.approx(w.steps[0].params["2.weight"].zeros * 8 / 9, rel=1e-12)


def test_terminal_heatmap_fits_the_width_and_marks_levels():
    from tests.conftest import render_text

    w = watched(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double(), steps=30)
    for width in (60, 80):
        text = render_text(w.heatmap(), width=width)
        lines = text.rstrip("\n").splitlines()
        assert max(map(len, lines)) <= width
        assert lines[0].startswith("gradient RMS") and "log scale" in lines[-1]
        rows = [line.split("│")[1] for line in lines if "│" in line]
        assert len(rows) == 2 and all(len(r) == 30 for r in rows)
        assert "█" in "".join(rows) and "▁" in "".join(rows)
    plain = str(w.heatmap(width=50)).splitlines()  # without rich: the same rows, as text
    assert max(map(len, plain)) <= 50 and plain[1].startswith("0 (Linear)")
    bad = watched(Functional(lambda h: torch.sqrt(h - 1e9)), steps=2)  # NaN gradients
    assert "x" in render_text(bad.heatmap()).split("│")[1]
    dead = render_text(watched(Functional(F.relu, bias=-100.0), steps=3).heatmap())
    assert dead.split("│")[1].startswith("···") and "· zero" in dead  # fc1: no gradient at all


def test_plot_heatmap_writes_three_panels(tmp_path):
    w = watched(mlp(), steps=5)
    w.plot_heatmap(tmp_path / "h.svg")
    svg = (tmp_path / "h.svg").read_text()
    for metric in ("rms", "ratio", "zeros"):
        assert f'id="heatmap-{metric}"' in svg
    w.plot_heatmap(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(backtrace.UsageError, match="unknown heatmap metric"):
        w.heatmap("bogus")
    empty = backtrace.watch(mlp())
    assert str(empty.heatmap()).endswith("no step recorded yet")
    with pytest.raises(backtrace.UsageError, match="no step recorded yet"):
        empty.plot_heatmap(tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_compiled_models_run_watched():
    """torch.compile'd code is not entered: its activations are not counted, the rest is."""
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    model = nn.Sequential(nn.Linear(3, 8), torch.compile(inner), nn.Linear(8, 1), nn.ReLU())
    replay = nn.Sequential(nn.Linear(3, 8), copy.deepcopy(inner), nn.Linear(8, 1), nn.ReLU())
    replay.load_state_dict({k.replace("_orig_mod.", ""): v for k, v in model.state_dict().items()})
    x = torch.randn(16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with backtrace.watch(model, opt, **quiet()) as w:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    replay(x).pow(2).mean().backward()
    s = w.steps[0]
    assert set(s.relu_zero) == {"3"}  # the eager ReLU; the compiled one is not ours to enter
    assert s.relu_zero["3"] == (replay(x) == 0).double().mean().item()
    for (name, rec), p in zip(s.params.items(), replay.parameters()):
        assert rec.backward_norm == pytest.approx(p.grad.norm().item(), rel=1e-5), name


def test_the_heatmaps_in_the_html_explorer(tmp_path):
    """A Training tab beside the trace's panels: the watch's cells, coloured as in the terminal."""
    from backtrace.training.explore import training_data
    from backtrace.training.heatmap import grid

    from .pages import browser, console_errors, open_page, page_data

    model = Functional(lambda h: torch.sqrt(h.abs() + 1.0), bias=0.0)
    x, y = data()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with backtrace.trace(model=model, max_traces=1) as t, backtrace.watch(model, opt, **quiet()) as w:
        for k in range(6):
            opt.zero_grad()
            loss = mse(model(x), y) * (math.nan if k == 3 else 1.0)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p in model.parameters():
                    p.nan_to_num_(0.0)
    page = tmp_path / "run.html"
    w.explore(page, t.trace)
    shipped = page_data(page.read_text(encoding="utf-8"))["panels"]["training"]
    assert shipped == training_data(w) and shipped["steps"] == 6
    rms = shipped["maps"][0]
    layers, starts, cells = grid(w, "rms", 120)
    assert rms["layers"] == layers and rms["starts"] == starts == [1, 2, 3, 4, 5, 6]
    assert [c["v"] for c in rms["cells"][0]] == [pytest.approx(v) if isinstance(v, float)
                                                 and math.isfinite(v) else "nan"
                                                 for v in cells[0]]
    driver = browser(tmp_path / "profile", 1400, 900)
    try:
        open_page(driver, page)
        driver.find_element("id", "tab-training").click()
        maps = driver.find_elements("css selector", ".heatmap")
        assert [m.get_attribute("data-metric") for m in maps] == ["rms", "ratio", "zeros"]
        cells = maps[0].find_elements("css selector", ".hm")
        assert len(cells) == len(layers) * 6
        assert cells[3].get_attribute("title") == "fc1, step 4: NaN or inf"
        assert "bad" in cells[3].get_attribute("class")
        assert console_errors(driver) == []
    finally:
        driver.quit()
    with pytest.raises(backtrace.UsageError, match="no step recorded yet"):
        backtrace.watch(mlp()).explore(tmp_path / "empty.html", t.trace)


def test_the_window_of_steps_slices_like_a_list():
    from backtrace.training.records import window

    w = window(3)
    w.extend(range(5))
    assert list(w) == [2, 3, 4] and w[-2:] == [3, 4] and w[0] == 2 and w[::-1] == [4, 3, 2]
