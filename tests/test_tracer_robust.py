"""The tracer never breaks the program it watches, whatever tensor subclass, torch.func transform
or device it uses: every case gives the results of an untraced run, raises nothing, and either
records a sensible trace or says, once, why its values could not be read."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, grad, jacrev, vmap

import backtrace
from backtrace.tracer import holding
from backtrace.values import TensorStats


def same(a, b) -> bool:
    """Bit-identical results, through dicts, tuples and sparse tensors."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if not isinstance(a, torch.Tensor):
        return a == b
    if a.layout != torch.strided:
        a, b = a.to_dense(), b.to_dense()
    return torch.equal(a, b)


def untraced_and_traced(run, **trace_kwargs):
    """run() without and with the tracer (same seed): both results and the tracer."""
    torch.manual_seed(0)
    want = run()
    torch.manual_seed(0)
    with backtrace.trace(**trace_kwargs) as t:
        got = run()
    assert same(want, got), "the tracer changed the result"
    assert t.errors == [], t.errors
    return want, t


def f(v):
    return (v.sin() * v).sum()


# -- torch.func
def test_torch_func_grad_gives_a_full_trace_with_the_true_gradient():
    x = torch.randn(4)
    for level in ("stats", "full"):
        want, t = untraced_and_traced(lambda: grad(f)(x), level=level)
        tr = t.trace
        assert "tracer_errors" not in tr.meta, tr.meta.get("tracer_errors")
        leaf = next(n for n in tr.nodes if n.kind == "input")
        if level == "full":
            assert torch.equal(leaf.grad, want)  # the plain numbers, not a torch.func wrapper
            sin = next(s for s in tr.steps if tr.node(s.node).op == "mul")
            # ∂(sin(x)·x)/∂sin(x) = x: the local Jacobian is diag(x)
            assert torch.allclose(sin.edges[0].local, torch.diag(x))
        else:
            assert leaf.grad.norm == pytest.approx(want.norm().item(), rel=1e-6)


def test_torch_func_grad_of_a_model_through_functional_call():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(5, 4)
    want, t = untraced_and_traced(
        lambda: grad(lambda p: functional_call(model, p, (x,)).pow(2).mean())(params),
        model=model, level="full")
    tr = t.trace
    assert "tracer_errors" not in tr.meta
    assert {n.meta["module"] for n in tr.nodes if n.op == "linear"} == {"0", "2"}
    grads = {tuple(n.grad.shape): n.grad for n in tr.nodes if n.kind == "input"}
    assert torch.equal(grads[(3, 4)], want["0.weight"])


@pytest.mark.parametrize("run", [
    lambda x: vmap(grad(f))(x),
    lambda x: jacrev(lambda v: v.sin() * v)(x[0]),
    lambda x: torch.func.hessian(f)(x[0]),
    lambda x: torch.autograd.functional.jacobian(lambda v: v.sin() * v, x[0], vectorize=True),
], ids=["vmap(grad)", "jacrev", "hessian", "autograd.functional.jacobian(vectorize)"])
def test_batched_gradients_say_once_that_they_are_not_recorded(run):
    x = torch.randn(3, 4)
    want, t = untraced_and_traced(lambda: run(x))
    tr = t.trace
    assert list(tr.meta["tracer_errors"]) == [next(e for e in tr.meta["tracer_errors"])]
    assert "values not recorded" in tr.meta["tracer_errors"][0]
    assert "batched by" in tr.meta["tracer_errors"][0]
    edges = [e for s in tr.steps for e in s.edges]
    assert edges and all(e.note == "not recorded" for e in edges if e.contribution is None)
    assert all("not computed" in e.rule for e in edges)


# -- devices, dtypes, layouts
def test_a_model_on_the_meta_device_gives_its_graph_without_numbers(tmp_path):
    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).to("meta")
        model(torch.randn(5, 4, device="meta")).sum().backward()
        return model[0].weight.grad.shape

    assert run() == (3, 4)
    with backtrace.trace() as t:
        assert run() == (3, 4)
    assert t.errors == []
    tr = t.trace
    assert [n.op for n in tr.nodes if n.kind == "op"] == ["t", "linear", "relu", "t", "linear",
                                                          "sum"]
    assert tr.meta["tracer_errors"] == ("values not recorded: the tensors are on the meta device "
                                        "(no data)",)
    assert all(n.value is None and n.grad is None for n in tr.nodes)
    relu = next(n for n in tr.nodes if n.op == "relu")
    assert relu.meta["shapes"] == ((5, 3),) and relu.meta["module"] == "1"
    text = backtrace.export(tr, tmp_path / "meta.txt").read_text()
    assert "not recorded" in text and "no path" not in text  # never "∂f/∂w = 0"


def test_complex_tensors():
    w0 = torch.randn(3, dtype=torch.cfloat)

    def run():
        w = w0.clone().requires_grad_()
        (w * w.conj()).real.sum().backward()  # |w|²: gradient 2w
        return w.grad

    for level in ("stats", "full"):
        want, t = untraced_and_traced(run, level=level)
        assert torch.allclose(want, 2 * w0)
        tr = t.trace
        leaf = next(n for n in tr.nodes if n.kind == "input")
        if level == "full":
            assert torch.equal(leaf.grad, want)
        else:
            assert isinstance(leaf.grad, TensorStats) and leaf.grad.dtype == "complex64"
            assert leaf.grad.norm == pytest.approx(want.abs().norm().item(), rel=1e-6)
        complex_steps = [e for s in tr.steps for e in s.edges if "complex" in e.rule]
        assert complex_steps and all(e.local is None for e in complex_steps)


@pytest.mark.parametrize("level", ["stats", "full"])
def test_sparse_embedding_and_a_sparse_coo_leaf(level):
    def run():
        emb = nn.Embedding(10, 3, sparse=True)
        a = torch.randn(3, 3).to_sparse().requires_grad_()
        (emb(torch.tensor([1, 2, 1])).sum() + torch.sparse.sum(a * 2)).backward()
        return emb.weight.grad, a.grad

    (emb_grad, a_grad), t = untraced_and_traced(run, level=level)
    tr = t.trace
    assert "tracer_errors" not in tr.meta, tr.meta.get("tracer_errors")
    leaves = [n for n in tr.nodes if n.kind == "input"]
    assert len(leaves) == 2
    norms = sorted(n.grad.norm if level == "stats" else n.grad.to_dense().norm().item()
                   for n in leaves)
    assert norms == pytest.approx(sorted([emb_grad.to_dense().norm().item(),
                                          a_grad.to_dense().norm().item()]), rel=1e-6)


# -- tensor subclasses
class Logged(torch.Tensor):
    """A __torch_function__ subclass that logs every call made on it."""

    log: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.log.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_a_torch_function_subclass_sees_only_the_users_calls():
    x0 = torch.randn(4)

    def run():
        Logged.log.clear()
        x = x0.clone().as_subclass(Logged).requires_grad_()
        y = (x.sin() * 3).sum()
        y.backward()
        return x.grad.as_subclass(torch.Tensor), tuple(Logged.log)

    (g, log_traced), t = untraced_and_traced(run)
    assert torch.allclose(g, 3 * torch.cos(x0))
    assert t.traces and t.trace.meta["kind"] == "backward"


def test_a_wrapper_subclass_without_storage():
    two = pytest.importorskip("torch.testing._internal.two_tensor")

    def run():
        a = torch.randn(3)
        x = two.TwoTensor(a, a * 2).requires_grad_()
        (x * x).sum().backward()
        return x.grad.a, x.grad.b

    (ga, gb), t = untraced_and_traced(run)
    tr = t.trace
    assert "TwoTensor" in tr.meta["tracer_errors"][0] and len(tr.meta["tracer_errors"]) == 1


# -- node objects held so that freeing a deep graph never recurses
def test_a_dropped_graph_is_freed_at_the_next_collection_and_a_live_one_is_kept():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1))
    with backtrace.trace(model=model):
        # sigmoid saves its output: h lives exactly as long as the graph that holds it
        h = model[:2](torch.randn(2, 3))
        kept = model[2](h).sum()
        g = model[:2](torch.randn(2, 3))
        dropped = model[2](g).sum()
        live, gone = weakref.ref(h), weakref.ref(g)
        del h, g, dropped
    gc.collect()
    assert gone() is None, "a dropped graph was kept"
    assert live() is not None  # the live one is untouched and still works
    kept.backward(retain_graph=True)  # (without retain_graph, backward itself frees h)
    assert model[0].weight.grad is not None
    del kept
    gc.collect()
    assert live() is None, "the graph was kept after it was dropped"


def test_a_sweep_frees_consumers_before_their_inputs_in_one_pass():
    x = torch.ones(2, requires_grad=True)
    y = x
    for _ in range(300):
        y = y * 1.0
        holding.grad_fn(y)
    before = holding.held()
    assert before >= 300
    del y
    freed = holding.sweep()
    assert freed >= 300 and holding.held() <= before - 300


# -- `backtrace trace` says what happened
THREADED = """
import threading, torch
def train():
    w = torch.ones(3, requires_grad=True)
    for _ in range(2):
        (w * 2).sum().backward()
t = threading.Thread(target=train)
t.start()
t.join()
"""
SPARSE = """
import torch
a = torch.randn(3, 3).to_sparse().requires_grad_()
torch.sparse.sum(a * 2).backward()
print("grad", a.grad.to_dense().sum().item())
"""


def test_backtrace_trace_says_the_backward_ran_in_another_thread(tmp_path):
    from click.testing import CliRunner

    from backtrace.cli import cli

    path = tmp_path / "threaded.py"
    path.write_text(THREADED)
    result = CliRunner().invoke(cli, ["trace", str(path)])
    assert result.exit_code == 1
    assert "made its 2 backward calls in other threads; only the main thread is traced" \
        in result.output
    path.write_text(THREADED + "(torch.ones(1, requires_grad=True) * 3).sum().backward()\n")
    result = CliRunner().invoke(cli, ["trace", "--call", "2", str(path)])
    assert result.exit_code == 1
    assert "made 1 backward call in its main thread (2 more in other threads, not traced)" \
        in result.output


def test_backtrace_trace_shows_a_sparse_coo_backward(tmp_path):
    from click.testing import CliRunner

    from backtrace.cli import cli

    path = tmp_path / "sparse.py"
    path.write_text(SPARSE)
    result = CliRunner().invoke(cli, ["trace", "-o", str(tmp_path / "t.json"),
                                      str(path)])
    assert result.exit_code == 0, result.output
    assert "grad 18.0" in result.output and "_sparse_sum" in result.output
    from backtrace.traces import Trace

    trace = Trace.from_json((tmp_path / "t.json").read_text())
    assert trace.node("a").kind == "input"


# -- deep recurrent chains, in a subprocess (a crash there is a failed test, not a lost session)
DEEP = r"""
import sys
import torch
import backtrace


def loop(cell, x, steps, touch=False):
    lstm = isinstance(cell, torch.nn.LSTMCell)
    state = (torch.zeros(1, 8), torch.zeros(1, 8)) if lstm else torch.zeros(1, 8)
    for _ in range(steps):
        state = cell(x, state)
        if touch:  # a Python object for each step's node, as stamping makes, held by no one
            (state[0] if lstm else state).grad_fn
    return state[0] if lstm else state


for case in sys.argv[1:]:
    mode, kind, steps = case.split(":")
    torch.manual_seed(0)
    cell, x = getattr(torch.nn, kind)(4, 8), torch.randn(1, 4)
    if mode == "control":
        out = loop(cell, x, int(steps), touch=True)
    elif mode == "forward":  # the forward traced; the graph freed after the block
        with backtrace.trace(model=cell, local_max=0) as t:
            out = loop(cell, x, int(steps))
        assert t.errors == [], t.errors
    else:  # forward and backward traced: every node of the chain walked and hooked
        loop(cell, x, int(steps)).sum().backward()
        want = {k: p.grad.clone() for k, p in cell.named_parameters()}
        cell.zero_grad()
        with backtrace.trace(model=cell, local_max=0) as t:
            out = loop(cell, x, int(steps))
            out.sum().backward()
        assert all(torch.equal(p.grad, want[k]) for k, p in cell.named_parameters())
        assert len(t.trace.steps) >= int(steps) and "tracer_errors" not in t.trace.meta
    del out
    print("freed", case, flush=True)
"""
STACK = 512 * 1024  # a small C stack: torch 2.13 overflows it freeing ~2,000 steps of node objects


def run_deep(*cases: str):
    import resource
    import subprocess
    import sys

    def small_stack():
        hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
        resource.setrlimit(resource.RLIMIT_STACK, (STACK, hard))

    return subprocess.run([sys.executable, "-c", DEEP, *cases], capture_output=True, text=True,
                          timeout=300, preexec_fn=small_stack)


deep = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs POSIX rlimits")


@deep
def test_the_control_crashes_so_the_deep_tests_can_fail():
    done = run_deep("control:RNNCell:5000")
    assert done.returncode < 0, "5,000 steps of unheld node objects no longer crash torch"


@deep
def test_deep_recurrent_chains_traced_and_freed():
    cases = ["forward:RNNCell:20000", "forward:GRUCell:5000", "forward:LSTMCell:5000",
             "backward:RNNCell:1500"]
    done = run_deep(*cases)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [w for c in cases for w in ("freed", c)]
