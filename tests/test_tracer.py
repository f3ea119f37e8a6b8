"""The tracer against PyTorch autograd itself: every recorded gradient is checked against `.grad`,
`torch.autograd.grad` or hand-derived numbers, and the hooks must leave autograd exactly as it was."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import backtrace
from backtrace.traces import Trace
from backtrace.values import TensorStats
from backtrace.errors import NothingToTraceError
from backtrace.tracer import Tracer


def seed_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    return model, torch.randn(8, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def by_type(trace: Trace, torch_type: str):
    return [n for n in trace.nodes if n.meta.get("torch_type") == torch_type]


def test_backtrace_trace_is_the_tracer():
    assert backtrace.trace is backtrace.tracer.trace
    with backtrace.trace() as t:
        assert isinstance(t, Tracer)


@pytest.mark.parametrize("level", ["stats", "full"])
def test_gradients_bitwise_identical_to_an_untraced_run(level):
    model, x, y = seed_mlp()
    F.cross_entropy(model(x), y).backward()
    expected = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    with backtrace.trace(model=model, level=level) as t:
        F.cross_entropy(model(x), y).backward()
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, expected[k]), k
    grads = t.trace.grads
    assert set(grads) == set(expected)
    for k, g in grads.items():
        if level == "full":
            assert torch.equal(g, expected[k]), k  # the recorded tensor is .grad bit for bit
        else:
            assert isinstance(g, TensorStats) and g.shape == tuple(expected[k].shape)
            assert g.norm == pytest.approx(expected[k].norm().item(), rel=1e-6)
            assert g.mean == pytest.approx(expected[k].mean().item(), rel=1e-5, abs=1e-9)
            assert g.absmax == pytest.approx(expected[k].abs().max().item(), rel=1e-6)


def test_nodes_carry_ops_modules_names_and_per_slot_gradients():
    model, x, y = seed_mlp()
    with backtrace.trace(model=model, names={"x": x}, level="full") as t:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
    tr = t.trace
    root = tr.node(tr.output)
    assert root.op == "cross_entropy" and root.meta["torch_type"] == "NllLossBackward0"
    assert root.meta["name"] == "loss" and tr.steps[0].node == root.id
    assert float(root.value) == pytest.approx(F.cross_entropy(model(x), y).item())
    linears = [n for n in tr.nodes if n.op == "linear"]
    assert [n.meta["module"] for n in linears] == ["0", "2"]
    # nodes made inside F.linear (the weight's transpose) belong to the module that called it
    assert [n.meta["module"] for n in by_type(tr, "TBackward0")] == ["0", "2"]
    assert linears[1].meta["name"] == "logits" and linears[1].meta["module_output"] == "2"
    relu = next(n for n in tr.nodes if n.op == "relu")
    assert relu.meta["module"] == "1" and relu.meta["saved"] == {"result": "[8×5] float32"}
    # the gradient reaching the logits is softmax - onehot, over the batch
    logits_d = logits.detach().requires_grad_()
    expected, = torch.autograd.grad(F.cross_entropy(logits_d, y), logits_d)
    assert torch.allclose(linears[1].grad, expected, atol=1e-7)
    # each edge's contribution is that input's slot of grad_inputs: 2.bias gets the summed rows
    step = next(s for s in tr.steps if s.node == linears[1].id)
    bias_edge = next(e for e in step.edges if e.input == "2.bias")
    assert torch.allclose(bias_edge.contribution, expected.sum(0), atol=1e-7)
    assert tr.node("0.weight").meta["module"] == "0" and tr.node("0.weight").kind == "input"
    # x needs no gradient: a const node, and the edge says why there is nothing
    addmm = next(s for s in tr.steps if s.node == linears[0].id)
    const_edge = next(e for e in addmm.edges if tr.node(e.input).kind == "const")
    assert const_edge.contribution is None
    assert const_edge.note == "no gradient: input does not require grad"


def test_small_local_jacobians_are_exact_and_big_ones_described():
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([4.0, 5.0, 6.0], requires_grad=True)
    with backtrace.trace(names={"a": a, "b": b}, level="full") as t:
        (a * b).sum().backward()
    mul = next(s for s in t.trace.steps if t.trace.node(s.node).op == "mul")
    ja, jb = (e.local for e in mul.edges)
    assert torch.equal(ja, torch.diag(b.detach())) and torch.equal(jb, torch.diag(a.detach()))
    assert mul.edges[0].rule == "Jacobian 3×3"
    x = torch.randn(20, 20, requires_grad=True)
    with backtrace.trace(local_max=64) as t:
        x.sin().sum().backward()
    sin = next(s for s in t.trace.steps if t.trace.node(s.node).op == "sin")
    assert sin.edges[0].local is None
    assert sin.edges[0].rule == "Jacobian 400×400 (not computed: too large)"
    s = torch.tensor(0.5, requires_grad=True)
    with backtrace.trace(names={"s": s}) as t:
        s.exp().backward()
    assert t.trace.steps[0].edges[0].local == pytest.approx(torch.exp(torch.tensor(0.5)).item())


def test_no_handle_left_and_graph_freed_after_the_context(monkeypatch):
    from backtrace.tracer.recording import BackwardRecording

    fired = []
    real = BackwardRecording._on_node
    monkeypatch.setattr(BackwardRecording, "_on_node", lambda self, i, a, b: (fired.append(i),
                                                                          real(self, i, a, b)))
    model, x, y = seed_mlp()
    originals = (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad)
    with backtrace.trace(model=model) as t:
        h = model[0](x).sigmoid()  # sigmoid saves its result: the graph holds h
        loss = model[2](h).sum()
        loss.backward(retain_graph=True)
    held = weakref.ref(h)
    node_count = len(t.trace.nodes)
    del h
    # the retained graph still works outside the context and nothing records it any more
    count = len(fired)
    # every op node's hook fired (a leaf fed by one edge needs none: its producer records it)
    assert count == sum(n.kind == "op" for n in t.trace.nodes)
    loss.backward()
    assert len(fired) == count, "a hook survived the context"
    assert len(t.traces) == 1 and len(t.trace.nodes) == node_count
    assert (torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad) == originals
    del loss
    gc.collect()
    assert held() is None, "the tracer kept the graph alive"


def test_retain_graph_twice_gives_two_traces():
    w = torch.tensor([2.0, -1.0], requires_grad=True)
    with backtrace.trace(names={"w": w}, level="full") as t:
        loss = (w * w).sum()
        loss.backward(retain_graph=True)
        loss.backward()
    assert len(t.traces) == 2
    assert [tr.meta["call"] for tr in t.traces] == [1, 2]
    for tr in t.traces:
        assert torch.equal(tr.grads["w"], torch.tensor([4.0, -2.0]))  # each call's own gradient
    assert torch.equal(w.grad, torch.tensor([8.0, -4.0]))
    assert t.traces[0].meta["retain_graph"] is True


def test_create_graph_and_double_backward():
    x = torch.tensor([1.5, -0.5], requires_grad=True)
    with backtrace.trace(names={"x": x}, level="full") as t:
        y = (x ** 3).sum()
        g, = torch.autograd.grad(y, x, create_graph=True)
        g.sum().backward()
    assert len(t.traces) == 2
    first, second = t.traces
    assert first.meta["kind"] == "grad" and first.meta["create_graph"] is True
    assert torch.allclose(first.grads["x"], 3 * x.detach() ** 2)  # summed from the edges into x
    assert not first.grads["x"].requires_grad  # hook work ran without building graph
    assert torch.allclose(x.grad, 6 * x.detach())
    assert torch.allclose(second.grads["x"], 6 * x.detach())


def test_inplace_ops_keep_their_names():
    x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    with backtrace.trace(names={"x": x}, level="full") as t:
        h = x * 2
        h.add_(1)
        h.relu_()
        loss = h.sum()
        loss.backward()
    tr = t.trace
    ops = [n.op for n in tr.nodes if n.kind == "op"]
    assert ops == ["mul", "add_", "relu_", "sum"]
    for op in ("mul", "relu_", "add_"):
        assert next(n for n in tr.nodes if n.op == op).meta["name"] == "h"
    assert next(n for n in tr.nodes if n.op == "relu_").meta["inplace"] is True
    assert torch.equal(tr.grads["x"], torch.tensor([0.0, 2.0, 2.0]))
    assert torch.equal(tr.node(next(n.id for n in tr.nodes if n.op == "mul")).value,
                       torch.tensor([-2.0, 4.0, 6.0]))  # the value before add_ changed it
    assert torch.equal(next(n for n in tr.nodes if n.op == "add_").value, torch.tensor([-1.0, 5, 7]))


def test_non_leaf_names_and_gradients():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    with backtrace.trace(names={"x": x, "h": h}, level="full") as t:
        (h * h).sum().backward()
    tr = t.trace
    assert tr.node("h").op == "ExpBackward0".removesuffix("Backward0").lower()
    assert tr.node("h").kind == "op"
    assert torch.allclose(tr.node("h").grad, 2 * h.detach())  # ∂/∂h of sum h² = 2h
    assert torch.allclose(tr.grads["x"], 2 * h.detach() ** 2)
    assert "h" not in tr.grads  # grads maps inputs only


def test_split_with_an_unused_output():
    x = torch.arange(6.0, requires_grad=True)
    with backtrace.trace(names={"x": x}, level="full") as t:
        a, b, c = x.chunk(3)
        (a * 3).sum().backward()
    tr = t.trace
    split = next(n for n in tr.nodes if n.meta["torch_type"] == "SplitBackward0")
    assert split.op == "chunk" and split.meta["name"] == "a, b, c"
    up = next(s for s in tr.steps if s.node == split.id).upstream
    assert isinstance(up, tuple) and len(up) == 3
    assert torch.equal(up[0], torch.full((2,), 3.0)) and up[1] is None and up[2] is None
    assert split.meta["shapes"] == ((2,), (2,), (2,))
    assert torch.equal(tr.grads["x"], torch.tensor([3.0, 3, 0, 0, 0, 0]))


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 3 * x * x * g


def test_custom_autograd_function():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}, level="full") as t:
        Cube.apply(x).sum().backward()
    node = next(n for n in t.trace.nodes if n.meta["torch_type"] == "CubeBackward")
    assert node.op == "cube" and node.meta["opaque"] == "custom autograd.Function"
    step = next(s for s in t.trace.steps if s.node == node.id)
    assert step.edges[0].local is None and "custom autograd.Function" in step.edges[0].rule
    assert torch.equal(t.trace.grads["x"], torch.tensor([3.0, 12.0]))


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_both_variants(reentrant):
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    x = torch.randn(3, 4, requires_grad=True)
    checkpoint(block, x, use_reentrant=reentrant).sum().backward()
    expected = x.grad.clone()
    x.grad = None
    with backtrace.trace(model=block, names={"x": x}, level="full") as t:
        checkpoint(block, x, use_reentrant=reentrant).sum().backward()
    assert len(t.traces) == 1  # the re-entrant inner backward is part of the outer call
    assert torch.equal(x.grad, expected) and torch.equal(t.trace.grads["x"], expected)
    if reentrant:
        node = next(n for n in t.trace.nodes if n.meta["torch_type"] == "CheckpointFunctionBackward")
        assert node.meta["opaque"] == "custom autograd.Function"
    else:
        tanh = next(n for n in t.trace.nodes if n.op == "tanh")
        assert tanh.meta["saved"].startswith("unavailable")
        assert tanh.meta["module"] == "1"


def _compile_works() -> str | None:
    try:
        f = torch.compile(lambda v: (v.sin() * 2).sum())
        v = torch.ones(2, requires_grad=True)
        f(v).backward()
        return None
    except Exception as exc:  # no C++ compiler or an unsupported platform
        return f"torch.compile cannot run here: {type(exc).__name__}: {exc}"[:200]


def test_torch_compile_is_an_opaque_region():
    reason = _compile_works()
    if reason:
        pytest.skip(reason)
    torch._dynamo.reset()
    f = torch.compile(lambda v: (v.sin() * 2).sum())
    x = torch.tensor([0.5, 1.0], requires_grad=True)
    with backtrace.trace(names={"x": x}, level="full") as t:
        f(x).backward()
    assert torch.allclose(t.trace.grads["x"], 2 * torch.cos(x.detach()))
    opaque = [n for n in t.trace.nodes if n.meta.get("opaque") == "torch.compile region"]
    assert opaque and "CompiledFunction" in opaque[0].meta["torch_type"]


def test_nothing_to_trace_under_no_grad():
    model, x, y = seed_mlp()
    with backtrace.trace(model=model) as t:
        with torch.no_grad():
            loss = F.cross_entropy(model(x), y)
        with pytest.raises(NothingToTraceError, match="does not require grad"):
            loss.backward()
    with pytest.raises(NothingToTraceError, match="no backward call"):
        t.trace
    with torch.no_grad(), backtrace.trace(model=model) as t:
        model(x)
    with pytest.raises(NothingToTraceError, match="torch.no_grad"):
        t.trace
    assert isinstance(NothingToTraceError("x"), RuntimeError)  # code catching torch's error still works


def test_traces_round_trip_through_json():
    model, x, y = seed_mlp()
    for level in ("stats", "full"):
        with backtrace.trace(model=model, level=level) as t:
            F.cross_entropy(model(x), y).backward()
        again = Trace.from_json(t.trace.to_json())
        assert [n.id for n in again.nodes] == [n.id for n in t.trace.nodes]
        for a, b in zip(again.nodes, t.trace.nodes):
            assert a.meta == b.meta and a.op == b.op and a.inputs == b.inputs
            if level == "stats":
                assert a.grad == b.grad
            elif b.grad is not None:
                assert torch.allclose(a.grad, b.grad)
        assert len(again.steps) == len(t.trace.steps)
    with backtrace.trace(model=model, local_max=0) as t:  # no tensors left in the trace
        F.cross_entropy(model(x), y).backward()
    assert Trace.from_json(t.trace.to_json()) == t.trace


def test_max_traces_keeps_the_last_and_stop_after_the_first():
    w = torch.ones(2, requires_grad=True)
    with backtrace.trace(max_traces=1, level="full") as t:
        for k in range(3):
            (w * (k + 1)).sum().backward()
    assert len(t.traces) == 1 and t.calls == 3 and t.trace.meta["call"] == 3
    assert torch.equal(t.trace.grads["w"], torch.full((2,), 3.0))
    with backtrace.trace(stop_after=1, level="full") as t:
        for k in range(3):
            (w * (k + 1)).sum().backward()
    assert len(t.traces) == 1 and t.calls == 3 and t.trace.meta["call"] == 1
    assert torch.equal(t.trace.grads["w"], torch.full((2,), 1.0))
    assert torch.equal(w.grad, torch.full((2,), 12.0))


def test_backward_that_raises_removes_hooks_and_keeps_a_partial_trace():
    x = torch.ones(2, requires_grad=True)

    class Boom(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            return v * 1

        @staticmethod
        def backward(ctx, g):
            raise ValueError("boom")

    with backtrace.trace(names={"x": x}) as t:
        with pytest.raises(ValueError, match="boom"):
            (Boom.apply(x) * 2).sum().backward()
    assert "boom" in t.trace.meta["error"]
    (x * 3).sum().backward()  # autograd still works, untraced
    assert torch.equal(x.grad, torch.full((2,), 3.0)) and len(t.traces) == 1


def test_bad_arguments_are_usage_errors():
    from backtrace.errors import UsageError

    with pytest.raises(UsageError, match="level"):
        backtrace.trace(level="everything")
    with pytest.raises(UsageError, match="not a tensor"):
        with backtrace.trace(names={"x": 3}):
            pass


@pytest.mark.parametrize("level", ["stats", "full"])
def test_a_tensor_hook_that_changes_a_gradient_is_seen_downstream(level):
    """The upstream of a node is recorded as it arrives, not assumed equal to what was sent."""
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}, level=level) as t:
        h = x * 3
        h.register_hook(lambda g: g * 10)
        (h * 2).sum().backward()
    tr = t.trace
    h_node = next(n for n in tr.nodes if n.meta.get("name") == "h")
    sent = next(e for s in tr.steps for e in s.edges if e.input == h_node.id)
    norm = (lambda v: v.norm) if level == "stats" else (lambda v: float(v.norm()))
    assert norm(sent.contribution) == pytest.approx(2 * 2 ** 0.5)  # ∂(sum 2h)/∂h = 2
    assert norm(h_node.grad) == pytest.approx(20 * 2 ** 0.5)  # after the hook: 20
    assert norm(tr.grads["x"]) == pytest.approx(60 * 2 ** 0.5) and torch.equal(x.grad, torch.full((2,), 60.0))


def test_transposed_gradients_share_statistics_with_their_source():
    torch.manual_seed(0)
    lin = nn.Linear(7, 5)
    with backtrace.trace(model=lin) as t:
        lin(torch.randn(3, 7)).square().sum().backward()
    g = t.trace.grads["weight"]
    assert g.shape == (5, 7)
    assert g.norm == pytest.approx(lin.weight.grad.norm().item(), rel=1e-6)
    assert g.absmax == pytest.approx(lin.weight.grad.abs().max().item(), rel=1e-6)
    tnode = next(n for n in t.trace.nodes if n.meta["torch_type"] == "TBackward0")
    assert tnode.grad.shape == (7, 5) and tnode.grad.norm == pytest.approx(g.norm, rel=1e-6)


def test_nested_tracers_both_record():
    model, x, y = seed_mlp()
    with backtrace.trace(model=model, level="full") as outer:
        with backtrace.trace(model=model, level="stats") as inner:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
    for t in (outer, inner):
        root = t.trace.node(t.trace.output)
        assert root.op == "cross_entropy" and root.meta["name"] == "loss"
    assert torch.equal(outer.trace.grads["0.weight"], model[0].weight.grad)
    assert inner.trace.grads["0.weight"].norm == pytest.approx(model[0].weight.grad.norm().item(),
                                                               rel=1e-6)


def test_gradient_edge_roots_pass_through_untraced():
    from torch.autograd.graph import get_gradient_edge

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace() as t:
        y = (x * x).sum()
        torch.autograd.backward([get_gradient_edge(y)], grad_tensors=[torch.tensor(1.0)])
    assert torch.equal(x.grad, torch.tensor([2.0, 4.0])) and t.traces == []


def test_checkpoint_forward_run_before_the_tracer_does_not_break_backward():
    """Nodes the tracer never stamped may sit in a checkpoint: reading or re-running them must not
    raise inside the backward."""
    from torch.utils.checkpoint import checkpoint

    x = torch.tensor([0.3, -0.2], requires_grad=True)
    y = checkpoint(lambda v: (v.sin() * v).sum(), x, use_reentrant=False)
    with backtrace.trace(names={"x": x}, level="full") as t:
        y.backward()
    expected = torch.cos(x.detach()) * x.detach() + torch.sin(x.detach())
    assert torch.allclose(x.grad, expected) and torch.allclose(t.trace.grads["x"], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_tensors():
    model, x, y = seed_mlp()
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    with backtrace.trace(model=model, level="stats") as t:
        F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert t.trace.grads[name].norm == pytest.approx(p.grad.norm().item(), rel=1e-5)


def test_sparse_gradients():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 4, sparse=True)
    with backtrace.trace(model=emb) as t:
        emb(torch.tensor([1, 2, 1])).sum().backward()
    g = t.trace.grads["weight"]
    dense = emb.weight.grad.to_dense()
    assert g.shape == (10, 4) and g.norm == pytest.approx(dense.norm().item())
    assert g.mean == pytest.approx(dense.mean().item()) and g.absmax == 2.0  # row 1 taken twice


def test_a_recording_failure_never_breaks_the_users_pass(monkeypatch):
    from backtrace.tracer import stats

    def broken(x, acc, full):
        raise RuntimeError("stats exploded")

    monkeypatch.setattr(stats, "block_parts", broken)
    model, x, y = seed_mlp()
    with backtrace.trace(model=model) as t:
        F.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert "stats exploded" in t.trace.meta["tracer_errors"][0]
    assert t.trace.grads["0.weight"] is None  # unknown, not made up


def test_python_operators_are_named_like_their_functions():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with backtrace.trace(names={"x": x}, level="full") as t:
        h = 2 - x / 4
        h *= 3
        h[0] = 5.0
        (h ** 2).sum().backward()
    ops = [n.op for n in t.trace.nodes if n.kind == "op"]
    assert ops == ["div", "sub", "mul_", "setitem", "pow", "sum"]
    # h = [5, 3 * (2 - 2/4)] = [5, 4.5]; ∂/∂x of 4.5² through x[1] only: 2 * 4.5 * 3 * (-1/4)
    assert torch.equal(t.trace.grads["x"], torch.tensor([0.0, -6.75]))


def test_local_jacobians_equal_torch_autograd_functional():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.randn(2, 3)
    with backtrace.trace(model=lin, level="full") as t:
        lin(x).tanh().sum().backward()
    step = next(s for s in t.trace.steps if t.trace.node(s.node).op == "linear")
    local = {t.trace.node(e.input).id: e.local for e in step.edges}
    expected = torch.autograd.functional.jacobian(lambda b: F.linear(x, lin.weight, b), lin.bias)
    assert torch.allclose(local["bias"], expected.reshape(4, 2))  # broadcast: summed as autograd does
    wt = lin.weight.detach().t()
    expected = torch.autograd.functional.jacobian(lambda w: x @ w, wt)
    assert torch.allclose(next(v for k, v in local.items() if k.startswith("%") and v is not None),
                          expected.reshape(4, 6))
