"""Folding torch-like traces: clusters by module path, boxes above a depth with the gradient norms at
their boundary (checked against torch backward hooks), ×N for repeated blocks, --hide, the budget."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from backtrace import explain
from backtrace.errors import LimitError, UsageError
from backtrace.render.dot import NORM_PALETTE, to_graphviz
from backtrace.fold import compact_indices, fold
from backtrace.render.draw import draw
from backtrace.traces import Trace, TraceNode
from backtrace.values import TensorStats, norm

from . import traced
from .test_export import svg_texts


class Residual(nn.Module):
    """x + f(x) as a module, so the stand-in tracer below records the add with its module path."""

    def forward(self, a, b):
        return a + b


class Block(nn.Module):
    def __init__(self, d: int, act: type = nn.Tanh) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.add = nn.Linear(d, 2 * d), act(), nn.Linear(2 * d, d), Residual()

    def forward(self, x):
        return self.add(x, self.fc2(self.act(self.fc1(x))))


class Net(nn.Module):
    def __init__(self, d: int = 6, layers: int = 12, odd: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Linear(3, d)
        self.layers = nn.ModuleList(Block(d, nn.ReLU if i == odd else nn.Tanh) for i in range(layers))
        self.head = nn.Linear(d, 1)

    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def stats(t: torch.Tensor | None) -> TensorStats | None:
    if t is None:
        return None
    t = t.detach().double()
    return TensorStats(tuple(t.shape), "float32", float(t.norm()), float(t.mean()), float(t.abs().max()))


def module_trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """A torch-shaped Trace, one node per leaf-module call and per parameter, like the tracer's
    (TensorStats values, meta module/name/torch_type, parameters as kind "input")."""
    producer: dict[int, str] = {id(x): "x"}
    records: list[tuple[str, str, tuple[str, ...], torch.Tensor, str]] = []
    params = dict(model.named_parameters())
    hooks = []
    for path, mod in model.named_modules():
        if path and not list(mod.children()):
            def hook(mod, args, out, path=path):
                own = tuple(f"{path}.{n}" for n, _ in mod.named_parameters(recurse=False))
                ins = tuple(producer[id(a)] for a in args if isinstance(a, torch.Tensor)) + own
                out.retain_grad()
                producer[id(out)] = path
                records.append((path, type(mod).__name__, ins, out, path))
            hooks.append(mod.register_forward_hook(hook))
    x.requires_grad_(True)
    out = model(x)
    loss = (out ** 2).mean()
    loss.backward()
    for h in hooks:
        h.remove()
    nodes = [TraceNode("x", "input", (), "x", stats(x), stats(x.grad), "input", {"module": "", "name": "x"})]
    for name, p in params.items():
        nodes.append(TraceNode(name, "input", (), name, stats(p), stats(p.grad), "input",
                               {"module": name.rpartition(".")[0], "name": name, "torch_type": "Parameter"}))
    for path, kind, ins, t, module in records:
        nodes.append(TraceNode(path, kind, ins, path, stats(t), stats(t.grad), "op",
                               {"module": module, "torch_type": kind, "name": path}))
    nodes.append(TraceNode("loss", "mse", (records[-1][0],), "mean(head**2)", float(loss.detach()), 1.0, "op",
                           {"module": "", "torch_type": "MeanBackward0"}))
    return Trace("torch", "loss", tuple(nodes), (), {"model": "Net"})


def hook_norms(model: nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """Oracle: (‖∂L/∂input‖, ‖∂L/∂output‖) of every block, from torch's full backward hooks."""
    model = copy.deepcopy(model)
    seen: dict[int, tuple[float, float]] = {}
    for k, layer in enumerate(model.layers):
        layer.register_full_backward_hook(
            lambda m, gin, gout, k=k: seen.__setitem__(k, (float(gin[0].norm()), float(gout[0].norm()))))
    x = x.detach().clone().requires_grad_(True)
    (model(x) ** 2).mean().backward()
    return [seen[k] for k in range(len(model.layers))]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model, x = Net(), torch.randn(4, 3)
    return model, x, module_trace(model, x)


def test_default_depth_keeps_under_the_target_and_merges_repeats(net):
    _, _, trace = net
    assert len(trace.nodes) == 1 + (2 + 12 * 4 + 2) + (1 + 12 * 4 + 1) + 1  # x, params, calls, loss
    folded = fold(trace)
    assert folded.meta["fold"]["depth"] == 4  # nothing needs folding: 16 boxes
    assert len(folded.nodes) == 16 and folded.meta["fold"]["clusters"] == {"layers.0": "layers.{0-11} ×12"}
    assert any("12 blocks of the same structure" in n for n in folded.meta["fold"]["notes"])
    small = fold(trace, target=12)  # depth 3 draws 12 boxes: shallow modules stay open
    assert small.meta["fold"]["depth"] == 3 and len(small.nodes) == 12
    assert {n.id for n in small.nodes} == {
        "x", "embed", "embed.weight", "embed.bias", "[layers.0.fc1]", "[layers.0.act]",
        "[layers.0.fc2]", "[layers.0.add]", "head", "head.weight", "head.bias", "loss"}
    assert fold(trace, target=11).meta["fold"]["depth"] == 2
    fc1 = small.node("[layers.0.fc1]")
    assert fc1.meta["members"] == 3  # the call and its two parameters
    # The ×12 belongs to the open block's cluster, not to the boxes inside it.
    assert fc1.meta["repeat"] == 1 and small.meta["fold"]["clusters"] == {"layers.0": "layers.{0-11} ×12"}


def test_folded_box_norms_equal_the_gradient_at_the_boundary(net):
    model, x, trace = net
    oracle = hook_norms(model, x)
    folded = fold(trace, depth=2)
    assert {n.id for n in folded.nodes} == {"x", "embed", "embed.weight", "embed.bias", "[layers.0]",
                                             "head", "head.weight", "head.bias", "loss"}
    box = folded.node("[layers.0]")
    assert box.meta["repeat"] == 12 and box.meta["title"] == "layers.{0-11} ×12"
    assert [i["path"] for i in box.meta["instances"]] == [f"layers.{k}" for k in range(12)]
    for inst, (g_in, g_out) in zip(box.meta["instances"], oracle):
        assert inst["grad_in"] == pytest.approx(g_in, rel=1e-5)
        assert inst["grad_out"] == pytest.approx(g_out, rel=1e-5)
    # Depth 1 folds the whole stack into one box: its boundary is block 0's input and block 11's output.
    whole = fold(trace, depth=1).node("[layers]")
    assert whole.meta["members"] == 12 * 8
    assert whole.meta["grad_in"] == pytest.approx(oracle[0][0], rel=1e-5)
    assert whole.meta["grad_out"] == pytest.approx(oracle[-1][1], rel=1e-5)
    # The head box sends the gradient of its input (block 11's output) and receives ∂L/∂head.
    head = fold(trace, depth=1).node("[head]")
    assert head.meta["grad_in"] == pytest.approx(oracle[-1][1], rel=1e-5)


def test_budget_folds_further_and_says_so(net):
    _, _, trace = net
    folded = fold(trace, depth=4, budget=9)
    assert folded.meta["fold"]["depth"] == 2 and len(folded.nodes) == 9
    assert "depth 4 gives 16 boxes, over the budget of 9: folded at depth 2 instead" in \
        folded.meta["fold"]["notes"]
    assert [n.id for n in fold(trace, depth=4, budget=5).nodes] == ["x", "[embed]", "[layers]",
                                                                     "[head]", "loss"]
    with pytest.raises(LimitError, match="over the budget of 3"):
        fold(trace, depth=4, budget=3)


def test_blocks_of_different_structure_are_not_merged():
    torch.manual_seed(1)
    model, x = Net(layers=5, odd=2), torch.randn(2, 3)
    folded = fold(module_trace(model, x), depth=2)
    boxes = {n.id: n.meta for n in folded.nodes if n.kind == "module"}
    assert boxes["[layers.0]"]["title"] == "layers.{0-1,3-4} ×4"
    assert boxes["[layers.2]"]["repeat"] == 1  # the ReLU block is drawn on its own
    assert compact_indices([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_folded_svg_shows_repeats_and_a_colour_bar(net):
    _, _, trace = net
    svg = draw(trace, "svg")
    texts = svg_texts(svg)
    assert "layers.{0-11} ×12" in texts  # the merged cluster's label
    assert "one colour per decade" in " ".join(texts) and "≥1e4" in texts
    source = to_graphviz(trace).source
    assert all(c in source for c in NORM_PALETTE)  # legend bar
    assert 'tooltip="layers.0"' in source and 'tooltip="layers.0.fc1"' in source  # nested clusters


def test_colour_follows_gradient_norm(net):
    _, _, trace = net
    folded = fold(trace, depth=1)
    source = to_graphviz(folded).source
    for index, n in enumerate(folded.nodes):
        g = norm(n.grad)
        if not g:
            continue
        line = next(l for l in source.splitlines() if l.lstrip().startswith(f"n{index} "))
        decade = min(8, max(0, math.floor(math.log10(g)) + 4))  # 1 -> the middle colour
        assert f'fillcolor="{NORM_PALETTE[decade]}"' in line, (n.id, g)


def test_hide_constants_and_accumulate():
    t = explain("f = 2 * x + 3 * y", x=1.0, y=2.0)
    folded = fold(t, hide=("constants",))
    assert [n.kind for n in folded.nodes].count("const") == 0
    assert {n.id for n in folded.nodes} == {n.id for n in t.nodes if n.kind != "const"}
    # Derived gradients are untouched.
    assert folded.node("x").grad == 2.0 and folded.node("y").grad == 3.0
    # AccumulateGrad nodes between a parameter and its use are bridged over.
    w = TraceNode("w", "input", (), "w", 2.0, 3.0, "input")
    acc = TraceNode("acc", "AccumulateGrad", ("w",), "", 2.0, 3.0, "op")
    f = TraceNode("f", "mul", ("acc", "x"), "", 6.0, 1.0, "op")
    x = TraceNode("x", "input", (), "x", 3.0, 2.0, "input")
    shown = fold(Trace("t", "f", (w, acc, x, f), ()), hide=("accumulate",))
    assert [n.id for n in shown.nodes] == ["w", "x", "f"] and shown.node("f").inputs == ("w", "x")
    with pytest.raises(UsageError, match="choose from accumulate, constants"):
        fold(t, hide=("weights",))


def test_graph_without_modules_over_the_budget_is_refused():
    chain = "+".join(f"x{i}" for i in range(40))
    t = explain(chain, **{f"x{i}": 1.0 for i in range(40)})
    with pytest.raises(LimitError, match="no module structure left to fold"):
        fold(t, budget=50)
    assert len(fold(t, budget=100).nodes) == len(t.nodes)
    assert math.isclose(t.node(t.output).value, 40.0)


def test_render_cli_folds_a_saved_torch_trace_and_says_so(net, tmp_path):
    from click.testing import CliRunner

    from backtrace.cli import cli

    _, _, trace = net
    saved = tmp_path / "net.json"
    saved.write_text(trace.to_json())
    out = tmp_path / "net.svg"
    result = CliRunner().invoke(cli, ["render", str(saved), "-o", str(out), "--depth", "4",
                                      "--budget", "9", "--hide", "constants"])
    assert result.exit_code == 0, result.output
    assert "note: depth 4 gives 16 boxes, over the budget of 9: folded at depth 2 instead" in result.output
    texts = svg_texts(out.read_bytes())
    assert "layers.{0-11} ×12" in texts and "×12" in texts  # the merged box and its repeat count


# ---------------------------------------------------------------- a real transformer, traced

@pytest.fixture(scope="module")
def transformer():
    """A 12-layer TransformerEncoder traced by backtrace.trace, and torch's own block gradients."""
    trace, oracle, _ = traced.transformer(d_model=16, nhead=2, tokens=5, oracle=True)
    return trace, oracle


def test_transformer_fold_norms_equal_torch_block_gradients(transformer):
    trace, oracle = transformer
    folded = fold(trace, depth=2)
    box = folded.node("[layers.0]")
    assert box.meta["repeat"] == 12 and len(folded.nodes) < 10
    for inst, (g_in, g_out) in zip(box.meta["instances"], oracle, strict=True):
        assert inst["grad_in"] == pytest.approx(g_in, rel=1e-5)
        assert inst["grad_out"] == pytest.approx(g_out, rel=1e-5)


def test_transformer_fold_drops_below_the_budget(transformer):
    trace, oracle = transformer
    assert len(trace.nodes) > 600
    default = fold(trace)
    assert len(default.nodes) <= 150  # the default depth's target
    deepest = default.meta["fold"]["max_depth"] + 1
    folded = fold(trace, depth=deepest, budget=40)
    assert len(folded.nodes) <= 40 and folded.meta["fold"]["depth"] < deepest
    assert any("over the budget of 40" in note for note in folded.meta["fold"]["notes"])
    # Folded at depth 3, the boxes are the parts of a block; in this post-norm layer norm2 is the
    # block's last op, so its box's output gradient is the gradient at block 0's output.
    assert folded.meta["fold"]["depth"] == 3
    assert folded.node("[layers.0.norm2]").meta["grad_out"] == pytest.approx(oracle[0][1], rel=1e-5)
    texts = svg_texts(draw(trace, "svg"))
    assert "layers.{0-11} ×12" in texts


def test_box_input_gradient_counts_only_what_the_box_sends():
    # x feeds the module m (a = 2x, b = a + 1) and, outside it, c = 3x; f = b + c.
    # ∂f/∂x = 2 + 3 = 5, but m sends back only ∂b/∂a · ∂a/∂x = 2 (hand-derived).
    t = explain("a = x * 2; b = a + 1; c = x * 3; f = b + c", x=1.0)
    inside = {"a", "b"} | {n.id for n in t.nodes if n.kind == "const" and n.value in (1.0, 2.0)}
    nodes = tuple(TraceNode(n.id, n.op, n.inputs, n.expr, n.value, n.grad, n.kind,
                            {"module": "m" if n.id in inside else ""}) for n in t.nodes)
    folded = fold(Trace("reference", t.output, nodes, tuple(t.steps), {}), depth=1)
    box = folded.node("[m]")
    assert t.node("x").grad == 5.0
    assert box.meta["grad_in"] == 2.0 and box.meta["grad_out"] == 1.0  # ∂f/∂b = 1
    assert box.inputs == ("x",) and folded.node("f").inputs == ("[m]", "c")
