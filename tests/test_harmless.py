"""The tracer is harmless: bit-identical gradients, no hook or graph left behind, per thread, bounded."""
from __future__ import annotations

import gc
import os
import threading
import tracemalloc
import weakref

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

import backtrace
from backtrace.traces import Trace
from backtrace import patches
from backtrace.tracer import stats
from backtrace.tracer.batch import Batch
from backtrace.tracer.recording import BackwardRecording
from backtrace.tracer.tracer import _MAX_ERRORS

LEVELS = ("stats", "full")


# -- the zoo: each builder returns (model, make_inputs, loss_fn); make_inputs() gives fresh leaves
def _mlp():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, lambda: (torch.randn(5, 4, requires_grad=True),), lambda out: out.pow(2).mean()


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.fc(h.flatten(1))


def _cnn():
    return _CNN(), lambda: (torch.randn(3, 2, 4, 4, requires_grad=True),), \
        lambda out: nn.functional.cross_entropy(out, torch.tensor([0, 2, 1]))


class _LSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _lstm():
    return _LSTM(), lambda: (torch.randn(2, 4, 3, requires_grad=True),), lambda out: out.sum()


def _transformer():
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1,
                                       batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    return model, lambda: (torch.randn(2, 3, 8, requires_grad=True),), lambda out: out.pow(2).sum()


class _InplaceReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 2)

    def forward(self, x):
        h = self.fc1(x)
        h += 1.0  # another in-place op on a non-leaf
        return self.fc2(self.act(h))


def _inplace():
    return _InplaceReLU(), lambda: (torch.randn(5, 4, requires_grad=True),), lambda out: out.sum()


class _Tied(nn.Module):
    """A language-model shape: the output projection reuses the embedding's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        return self.out(torch.tanh(self.mix(self.embed(tokens))))


def _tied():
    return _Tied(), lambda: (torch.tensor([[1, 3, 5], [0, 6, 3]]),), \
        lambda out: nn.functional.cross_entropy(out.reshape(-1, 7), torch.tensor([3, 5, 0, 6, 3, 1]))


class _Checkpointed(nn.Module):
    """Activation checkpointing with dropout inside: the recomputation must replay the same mask."""

    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(4, 6), nn.Dropout(0.3), nn.Linear(6, 2)
        self.reentrant = reentrant

    def inner(self, v):
        return self.drop(torch.tanh(self.a(v)))

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        return self.b(checkpoint(self.inner, x, use_reentrant=self.reentrant))


def _checkpointed(reentrant: bool):
    return lambda: (_Checkpointed(reentrant), lambda: (torch.randn(5, 4, requires_grad=True),),
                    lambda out: out.pow(2).sum())


ZOO = {
    "mlp": (_mlp, False),
    "cnn-eval": (_cnn, False),
    "cnn-train": (_cnn, True),
    "lstm": (_lstm, False),
    "transformer-eval": (_transformer, False),
    "transformer-train": (_transformer, True),
    "inplace-relu": (_inplace, False),
    "weight-tying": (_tied, False),
    "checkpoint-train": (_checkpointed(False), True),
    "checkpoint-reentrant-train": (_checkpointed(True), True),
}


def _run(model, inputs, loss_fn, tracer=None):
    """One forward and backward from fresh grads: (param grads, input grads, loss, RNG state after)."""
    model.zero_grad(set_to_none=True)
    threads = torch.get_num_threads()
    torch.manual_seed(1234)  # identical dropout masks in both runs
    if tracer is None:
        loss = loss_fn(model(*inputs))
        loss.backward()
    else:
        with tracer:
            loss = loss_fn(model(*inputs))
            loss.backward()
    params = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads = [x.grad.clone() if x.grad is not None else None for x in inputs]
    # the tracer draws no random numbers (the next step's dropout masks stay the same) and leaves
    # the thread count and grad mode as they were
    assert torch.get_num_threads() == threads and torch.is_grad_enabled()
    return params, grads, loss.detach(), torch.get_rng_state()


def _fresh(make_inputs):
    torch.manual_seed(7)
    return make_inputs()


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(ZOO))
def test_gradients_bit_identical_to_an_untraced_run(name, level):
    build, train = ZOO[name]
    torch.manual_seed(0)
    model, make_inputs, loss_fn = build()
    model.train(train)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats move
    want_params, want_inputs, want_loss, want_rng = _run(model, _fresh(make_inputs), loss_fn)
    after_plain = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    tracer = backtrace.trace(model=model, level=level)
    got_params, got_inputs, got_loss, got_rng = _run(model, _fresh(make_inputs), loss_fn, tracer)
    assert torch.equal(got_loss, want_loss) and torch.equal(got_rng, want_rng)
    assert want_params.keys() == got_params.keys() and want_params
    for k in want_params:
        assert torch.equal(got_params[k], want_params[k]), k
    for a, b in zip(got_inputs, want_inputs):
        assert (a is None and b is None) or torch.equal(a, b)
    for k, v in model.state_dict().items():  # running statistics updated exactly the same way
        assert torch.equal(v, after_plain[k]), k
    # and the tracer really recorded the call: the trace's parameter gradients are the real ones
    grads = tracer.trace.grads
    for k, g in got_params.items():
        if name == "weight-tying" and k == "out.weight":
            continue  # one tensor, named once (embed.weight)
        if name == "checkpoint-reentrant-train" and k.startswith("a."):
            continue  # reached by the checkpoint's own nested backward, which runs untraced
        if level == "full":
            assert torch.equal(grads[k], g), k
        else:
            assert grads[k].norm == pytest.approx(g.norm().item(), rel=1e-5, abs=1e-12), k


def test_weight_tying_is_one_leaf_with_the_summed_gradient():
    torch.manual_seed(0)
    model, make_inputs, loss_fn = _tied()
    with backtrace.trace(model=model, level="full") as t:
        loss_fn(model(*make_inputs())).backward()
    leaves = [n for n in t.trace.nodes if n.kind == "input" and n.id.endswith(".weight")
              and n.meta["shapes"] == ((7, 4),)]
    assert [n.id for n in leaves] == ["embed.weight"]
    assert torch.equal(t.trace.grads["embed.weight"], model.embed.weight.grad)


# -- nothing is left behind after an exception inside the block
def _global_state():
    return (dict(nn_module._global_forward_pre_hooks), dict(nn_module._global_forward_hooks),
            dict(nn_module._global_forward_hooks_always_called),
            torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad,
            torch._C._len_torch_function_stack())


class _Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return v * 2

    @staticmethod
    def backward(ctx, g):
        raise ArithmeticError("boom in backward")


def _raise_in_forward(model, x):
    model(x)
    raise ArithmeticError("boom in forward")


def _raise_in_backward(model, x):
    _Boom.apply(model(x)).sum().backward()


def _raise_in_user_hook(model, x):
    h = model(x)
    h.register_hook(lambda g: 1 / 0)
    h.sum().backward()


@pytest.mark.parametrize("where", [_raise_in_forward, _raise_in_backward, _raise_in_user_hook])
def test_an_exception_inside_the_block_leaves_no_hook_and_frees_the_graph(where, monkeypatch):
    fired = []
    real = BackwardRecording._hook
    monkeypatch.setattr(BackwardRecording, "_hook",
                        lambda self, i, a, b: (fired.append(i), real(self, i, a, b))[1])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2))
    x = torch.randn(2, 3)
    before = _global_state()
    probe: list[weakref.ref] = []
    recorders: list[BackwardRecording] = []
    real_init = BackwardRecording.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        recorders.append(self)

    monkeypatch.setattr(BackwardRecording, "__init__", spy)
    real_linear = nn.Linear.forward

    def keep(self, inp):  # the second linear saves its input: it lives exactly as long as the graph
        if inp.grad_fn is not None:
            probe.append(weakref.ref(inp))
        return real_linear(self, inp)

    monkeypatch.setattr(nn.Linear, "forward", keep)
    out = model(x)  # control: the probe does see a live graph
    gc.collect()
    assert len(probe) == 1 and probe[0]() is not None
    del out
    gc.collect()
    assert probe[0]() is None
    probe.clear()
    t = backtrace.trace(model=model)
    with pytest.raises((ArithmeticError, ZeroDivisionError)), t:
        where(model, x)
    assert _global_state() == before, "a global hook, patch or torch-function mode survived"
    assert t._forward is None and patches.active() == {}
    assert all(r.handles == [] for r in recorders)
    assert all(info.node is None for r in recorders for info in r.infos)
    if where is not _raise_in_forward:  # the failed backward still left a partial trace
        assert len(t.traces) == 1 and "error" in t.trace.meta
    # a new graph, untraced: runs normally and none of our hooks fire
    count = len(fired)
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    (w * w).sum().backward()
    assert torch.equal(w.grad, torch.tensor([2.0, -4.0]))
    assert len(fired) == count and len(t.traces) == (0 if where is _raise_in_forward else 1)
    monkeypatch.undo()
    del where
    gc.collect()
    assert probe and all(p() is None for p in probe), "the autograd graph was kept alive"


# -- two threads at once
def _thread_models():
    torch.manual_seed(3)
    a = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    b = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(9, 2))
    return {"a": (a, torch.randn(4, 3)), "b": (b, torch.randn(4, 2, 5))}


@pytest.mark.parametrize("level", LEVELS)
def test_two_threads_trace_two_models_at_once(level):
    """a enters first and exits first, while b is still tracing: b's last call is traced too."""
    models = _thread_models()
    calls = {"a": 3, "b": 4}
    originals = _global_state()
    want, once = {}, {}
    for k, (m, x) in models.items():
        for call in range(calls[k]):
            m(x).pow(2).sum().backward()
            if call == 0:
                once[k] = {n: p.grad.clone() for n, p in m.named_parameters()}
        want[k] = {n: p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad(set_to_none=True)
    barrier = threading.Barrier(2, timeout=30)
    a_entered, a_exited = threading.Event(), threading.Event()
    tracers, errors = {}, []

    def work(k: str) -> None:
        m, x = models[k]
        try:
            if k == "b":
                assert a_entered.wait(30)
            with backtrace.trace(model=m, level=level) as t:
                tracers[k] = t
                a_entered.set()
                for _ in range(3):  # interleaved: each thread's forward and backward overlap the other's
                    loss = m(x).pow(2).sum()
                    barrier.wait()
                    loss.backward()
                if k == "b":  # the first tracer is gone by now: this call must still be traced
                    loss = m(x).pow(2).sum()
                    assert a_exited.wait(30)
                    loss.backward()
            if k == "a":
                a_exited.set()
        except BaseException as exc:  # noqa: BLE001 - reported in the main thread
            errors.append(exc)
            barrier.abort()
            a_entered.set()
            a_exited.set()

    threads = [threading.Thread(target=work, args=(k,)) for k in models]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for k, (m, _) in models.items():
        t = tracers[k]
        assert len(t.traces) == calls[k] and t.calls == calls[k]
        for tr in t.traces:  # only its own model: every leaf is one of its parameters
            leaves = {n.id: n.meta["shapes"][0] for n in tr.nodes if n.kind == "input"}
            assert leaves == {n: tuple(p.shape) for n, p in m.named_parameters()}, (k, leaves)
            modules = {n.meta["module"] for n in tr.nodes} - {""}
            assert modules <= {name for name, _ in m.named_modules()}
        for n, p in m.named_parameters():
            assert torch.equal(p.grad, want[k][n]), (k, n)
            g = t.trace.grads[n]
            if level == "full":  # what the last call sent the leaf: one call's gradient
                assert torch.equal(g, once[k][n]), (k, n)
            else:
                assert g.norm == pytest.approx(once[k][n].norm().item(), rel=1e-5), (k, n)
    assert _global_state() == originals


def test_tracers_exited_out_of_order_restore_everything():
    """Thread-style overlap in one thread: the first tracer exits while the second is still on."""
    originals = (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad)
    w = torch.tensor([1.0, 3.0], requires_grad=True)
    first = backtrace.trace(names={"w": w})
    second = backtrace.trace(names={"w": w})
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    (w * w).sum().backward()  # still traced by the second, forward included
    second.__exit__(None, None, None)
    assert len(second.traces) == 1 and second.trace.grads["w"].norm == pytest.approx(
        torch.tensor([2.0, 6.0]).norm().item())
    mul = next(n for n in second.trace.nodes if n.op == "mul")
    assert mul.value is not None and mul.value.norm == pytest.approx(
        torch.tensor([1.0, 9.0]).norm().item())  # stamped by the second's own mode
    assert torch._C._len_torch_function_stack() == 0
    assert first.traces == []
    assert (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad) == originals
    (w * w).sum().backward()
    assert len(second.traces) == 1 and first.traces == []
    assert torch.equal(w.grad, torch.tensor([4.0, 12.0]))


# -- a long training loop stays flat. The default suite runs 3,000 steps and compares memory after
# steps 2,400 and 3,000 (tracemalloc slows every allocation ~3x, so it starts 100 steps before the
# first reading); BACKTRACE_LONG=1 runs 10,000 steps and compares steps 2,000 and 10,000.
LONG = os.environ.get("BACKTRACE_LONG") == "1"
STEPS, WATCH_FROM = (10_000, 2_000) if LONG else (3_000, 2_400)


def test_max_traces_is_a_rolling_window():
    w = torch.ones(2, requires_grad=True)
    with backtrace.trace(max_traces=2, level="full") as t:
        for k in range(5):
            (w * (k + 1)).sum().backward()
    assert len(t.traces) == 2 and t.calls == 5
    assert [tr.meta["call"] for tr in t.traces] == [4, 5]
    assert torch.equal(t.trace.grads["w"], torch.full((2,), 5.0))
    assert torch.equal(w.grad, torch.full((2,), 15.0))


def test_a_long_training_loop_keeps_memory_flat():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    objects, traces, held = {}, {}, {}
    try:
        with backtrace.trace(model=model, max_traces=5) as t:
            for step in range(1, STEPS + 1):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                if step == WATCH_FROM - 100:  # the window is refilled by the first reading
                    tracemalloc.start()
                if step in (WATCH_FROM, STEPS):
                    gc.collect()
                    held[step] = tracemalloc.get_traced_memory()[0]
                    live = gc.get_objects()
                    objects[step] = len(live)
                    traces[step] = sum(type(o) is Trace for o in live)
                    del live
    finally:
        tracemalloc.stop()
    assert len(t.traces) == 5 and t.calls == STEPS
    assert [tr.meta["call"] for tr in t.traces] == list(range(STEPS - 4, STEPS + 1))
    assert t.trace.grads["0.weight"].norm == pytest.approx(model[0].weight.grad.norm().item(),
                                                           rel=1e-5)
    assert traces[STEPS] == traces[WATCH_FROM], traces  # the window's five; none accumulate
    # one object kept per step would add thousands; a few may come and go with caches
    assert objects[STEPS] - objects[WATCH_FROM] < 100, objects
    assert held[WATCH_FROM] > 10_000  # the five traces in the window are counted: a live reading
    # a trace kept per step would be ~35 kB a step; what stays is allocator noise of ~10 kB
    grown = held[STEPS] - held[WATCH_FROM]
    assert grown < (1_000_000 if LONG else 256_000), f"grew {grown} bytes, steps {WATCH_FROM}..{STEPS}"


class _FreshLayerEachCall(nn.Module):
    """Sloppy but common: a module (with parameters) built inside forward, new on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[weakref.ref] = []
        self.last: nn.Module | None = None  # not a submodule: a plain attribute set below

    def forward(self, x):
        layer = nn.Linear(3, 2)
        self.made.append(weakref.ref(layer))
        object.__setattr__(self, "last", layer)
        return layer(x).tanh()


def test_modules_made_on_the_fly_are_not_kept_alive():
    torch.manual_seed(0)
    model = _FreshLayerEachCall()
    x = torch.randn(4, 3)
    with backtrace.trace(model=model, max_traces=2, level="full") as t:
        for _ in range(30):
            out = model(x)
            out.sum().backward()
            # still named by its place in the parent, with the real gradient
            assert torch.equal(t.trace.grads["Linear.weight"], model.last.weight.grad)
            del out
        object.__setattr__(model, "last", None)
        gc.collect()
        alive = [r for r in model.made if r() is not None]
        assert alive == [], f"{len(alive)} of 30 on-the-fly modules kept alive by the tracer"
        assert len(t._modules) <= 2 and len(t._params) <= 2


def test_a_failure_repeated_every_step_keeps_bounded_records(monkeypatch):
    def broken(x, acc, full):
        raise RuntimeError("stats exploded")

    monkeypatch.setattr(stats, "block_parts", broken)
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    big = torch.zeros(Batch(0).small + 1, requires_grad=True)  # reduced at once, in forward
    with backtrace.trace(max_traces=3) as t:
        for _ in range(150):
            (w.exp() * 2).sum().backward()  # every statistic fails on every step
            (big * 2).sum().backward()
    assert len(t.errors) <= _MAX_ERRORS
    assert len(t.traces) == 3 and "stats exploded" in t.trace.meta["tracer_errors"][0]
    assert len(t.trace.meta["tracer_errors"]) < 20  # this call's own, not every step's
    want = torch.zeros(2)
    for _ in range(150):  # what autograd accumulates, step by step
        want += w.detach().exp() * 2
    assert torch.equal(w.grad, want)


class _Raises(nn.Module):
    def forward(self, x):
        raise ArithmeticError("boom inside a module under no_grad")


def test_outputs_under_no_grad_are_bit_identical_fused_paths_included():
    """Validation inside the block: fused inference paths (taken only without a torch-function
    mode) still run, and recording resumes after."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        want = model(x), attention(x, x, x)[0]
    with backtrace.trace(model=model, level="full") as t:
        with torch.no_grad():
            got = model(x), attention(x, x, x)[0]
            with pytest.raises(ArithmeticError):
                _Raises()(x)
        assert torch._C._len_torch_function_stack() == 1  # our mode is back
        loss = model(x).pow(2).sum()
        loss.backward()
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    root = t.trace.node(t.trace.output)
    assert root.op == "sum" and torch.equal(root.value, loss.detach())  # stamped in forward
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("level", LEVELS)
def test_autograd_grad_and_double_backward_are_bit_identical(level):
    torch.manual_seed(0)
    model, make_inputs, _ = _mlp()
    params = list(model.parameters())

    def run():
        (x,) = _fresh(make_inputs)
        loss = model(x).pow(2).mean()
        grads = torch.autograd.grad(loss, params + [x], create_graph=True)
        penalty = sum(g.pow(2).sum() for g in grads)  # a gradient penalty: second order
        model.zero_grad(set_to_none=True)
        penalty.backward()
        return [g.detach() for g in grads] + [p.grad.clone() for p in params]

    want = run()
    with backtrace.trace(model=model, level=level) as t:
        got = run()
    assert len(t.traces) == 2 and [tr.meta["kind"] for tr in t.traces] == ["grad", "backward"]
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_entering_one_tracer_twice_at_once_is_refused_and_leaves_nothing():
    before = _global_state()
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    t = backtrace.trace()
    with t:
        with pytest.raises(backtrace.errors.UsageError, match="already on"), t:
            pass
        (w * 3).sum().backward()  # the refused entry did not disturb the running one
    assert _global_state() == before and len(t.traces) == 1
    with t:  # entering again afterwards is fine, and adds to the same traces
        (w * 3).sum().backward()
    assert _global_state() == before and len(t.traces) == 2
    assert torch.equal(w.grad, torch.full((2,), 6.0))


def test_named_tensors_are_not_kept_alive_after_the_block():
    """names={...} may name an intermediate: a tracer kept for its traces must not keep its graph."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1))
    x = torch.randn(2, 3, requires_grad=True)
    h = model[:2](x)
    loss = model[2](h).sum()
    t = backtrace.trace(model=model, names={"x": x, "h": h})
    with t:
        loss.backward()
    assert t.trace.node("h").meta["name"] == "h"
    probe = weakref.ref(h)
    del h, loss
    gc.collect()
    assert probe() is None, "the tracer kept a named tensor (and its graph) alive"
    with t:  # names of tensors still alive carry over to a second block
        model(x).sum().backward()
    assert t.trace.node("x").kind == "input" and t.trace.node("x").meta["name"] == "x"
