"""`backtrace.diff` and `backtrace diff`: two runs of one model aligned node by node, the first
node whose inputs agree but whose output does not, relative gradient errors per module and per
parameter. Oracles: the factor a test put into one backward, torch's own gradients of both runs,
and the node a second version of the code changed."""
from __future__ import annotations

import json
import math
import textwrap
import warnings

import pytest
import torch
from click.testing import CliRunner

import backtrace
from backtrace.cli import cli
from backtrace.errors import TraceMismatchError
from backtrace.render import to_text
from backtrace.rundiff.view import DiffView


class Swish(torch.autograd.Function):
    """x·σ(x) with a hand-written backward, times `factor` (1: right; 1.01: off by 1%)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.save_for_backward(x)
        ctx.factor = factor
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * (s + x * s * (1 - s)) * ctx.factor, None


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.factor = 1.0

    def forward(self, x):
        return x + self.norm(Swish.apply(self.fc(x), self.factor) * 0.5)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(3))
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def net(factor_in_block_1: float = 1.0) -> Net:
    torch.manual_seed(1)
    model = Net()
    model.blocks[1].factor = factor_in_block_1
    return model


def run(model: torch.nn.Module, level: str = "full", autocast: torch.dtype | None = None,
        seed: float = 1.0):
    """One traced training step; the trace and the model (its .grad filled)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
    with backtrace.trace(model=model, level=level) as t:
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward(torch.tensor(seed))
    return t.trace


def node_of(trace, op: str, module: str) -> str:
    (found,) = [n.id for n in trace.nodes if n.op == op and n.module == module]
    return found


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / a.double().norm())


# ---------------------------------------------------------------- the cases of the issue

def test_identical_runs_agree():
    a, b = run(net()), run(net())
    report = backtrace.diff(a, b)
    assert not report.differ and report.first is None and report.divergences == []
    assert report.aligned == len(a.nodes) - sum(n.kind == "const" for n in a.nodes)
    assert report.unaligned == [] and report.differences == 0
    assert all(m.rel_error == 0 for m in report.modules)
    assert {p.name for p in report.parameters} == {n for n, _ in net().named_parameters()}
    assert report.line() == f"A and B agree within rtol=0.0001, atol=1e-06 ({report.aligned} " \
                            "nodes aligned)"


@pytest.mark.parametrize("level", ["full", "stats"])
def test_a_custom_backward_off_by_a_small_factor_is_named_exactly(level):
    a, b = run(net(), level), run(net(1.01), level)
    report = backtrace.diff(a, b)
    first = report.first
    assert report.differ and first is not None
    assert (first.node, first.op, first.module, first.what) == \
        (node_of(a, "swish", "blocks.1"), "swish", "blocks.1", "local")
    assert first.node_b == node_of(b, "swish", "blocks.1")
    assert first.slot == 0 and first.input == f"{node_of(a, 'linear', 'blocks.1.fc')} linear"
    assert [q for q, _, _ in first.agreed] == ["upstream"]  # it got the same gradient
    if level == "full":  # exact: the gradient it sends is 1.01 times the right one
        assert first.exact and first.rel_error == pytest.approx(0.01, rel=1e-4)
    else:  # statistics give a lower bound, which the 1% respects
        assert not first.exact and 0.009 < first.rel_error <= 0.01 * (1 + 1e-4)
    assert len(report.divergences) == 1  # everything else only passes it on
    # Modules after block 1 in the forward pass (before it in backward) agree exactly; block 1's
    # linear gets 1.01 times its gradient, and so do its parameters.
    errors = {m.module: m.rel_error for m in report.modules}
    assert errors["blocks.2.fc"] == errors["blocks.2.norm"] == errors["head"] == 0
    assert report.modules[0].module == "blocks.1.fc"
    params = {p.name: p for p in report.parameters}
    assert params["blocks.1.fc.weight"].rel_error == pytest.approx(0.01, rel=1e-3)
    assert not params["blocks.1.fc.weight"].ok and params["blocks.2.fc.weight"].ok
    assert params["blocks.2.fc.weight"].rel_error == 0


def test_bf16_autocast_against_fp32_has_no_false_divergence_at_a_cast():
    fp32, bf16 = net(), net()
    a, b = run(fp32), run(bf16, autocast=torch.bfloat16)
    report = backtrace.diff(a, b)
    assert report.differ and report.casts[0] == 0 and report.casts[1] > 0
    casts = {n.id for n in b.nodes if n.meta.get("torch_type") == "ToCopyBackward0"}
    assert casts and all(d.node_b not in casts for d in report.divergences)
    # bf16 first rounds in the first matmul: the first block's linear, a forward value.
    assert (report.first.op, report.first.module, report.first.what) == \
        ("linear", "blocks.0.fc", "value")
    assert report.first.node_b == node_of(b, "linear", "blocks.0.fc")
    # The per-module table, largest first, and each parameter's error as torch computes it.
    errors = [m.rel_error for m in report.modules]
    assert errors == sorted(errors, reverse=True) and 1e-4 < errors[0] < 0.1
    for name, p in dict(fp32.named_parameters()).items():
        mine = next(e for e in report.parameters if e.name == name)
        other = dict(bf16.named_parameters())[name]
        assert mine.exact and mine.rel_error == pytest.approx(rel(p.grad, other.grad), rel=1e-6)


@pytest.fixture(scope="module")
def compiled_trace():
    """One torch.compile of block 1 (slow: compiled once for the tests that need it)."""
    model = net()
    model.blocks[1] = torch.compile(model.blocks[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.compile's note about global module hooks
        return run(model)


def test_eager_against_torch_compile_of_one_block_compares_at_its_boundary(compiled_trace):
    eager = run(net())
    report = backtrace.diff(eager, compiled_trace)
    assert not report.differ, report.line()
    (region,) = report.unaligned
    assert [x.split()[1] for x in region.b] == ["compiled_function"]
    assert {x.split()[1] for x in region.a} >= {"linear", "swish", "layer_norm", "add"}
    # The compiled block's parameters (named blocks.1._orig_mod.* by torch) are aligned by name
    # and agree to rounding.
    params = {p.name: p for p in report.parameters}
    assert params["blocks.1.fc.weight"].exact and params["blocks.1.fc.weight"].rel_error < 1e-5
    # The same eager model with block 1's backward off by 1%: the region is where it starts.
    report = backtrace.diff(run(net(1.01)), compiled_trace)
    first = report.first
    assert report.differ and first.what == "local" and first.module == "blocks.1"
    (compiled,) = [n.id for n in compiled_trace.nodes if n.op == "compiled_function"]
    assert first.region[1] == (f"{compiled} compiled_function",)
    # Compared at its boundary: the gradient block 0's output gets, as torch computes it.
    assert first.input == f"{node_of(compiled_trace, 'add', 'blocks.0')} add"
    assert first.exact and first.rel_error == pytest.approx(block_input_error(), rel=1e-4)


def block_input_error() -> float:
    """‖∂L/∂h‖ relative change, h block 0's output, when block 1's backward is off by 1%."""
    grads = []
    for factor in (1.0, 1.01):
        model = net(factor)
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        h = model.blocks[0](x)
        h.retain_grad()
        out = model.head(model.blocks[2](model.blocks[1](h)))
        torch.nn.functional.cross_entropy(out, y).backward()
        grads.append(h.grad.clone())
    return rel(grads[1], grads[0])  # relative to A, the run that is off


# ---------------------------------------------------------------- two versions of a script

VERSION_1 = '''
import math, sys
import torch
import torch.nn.functional as F

class Attention(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(d, d) for _ in range(3))
        self.d = d

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d)
        return torch.softmax(scores, dim=-1) @ v

class Model(torch.nn.Module):
    def __init__(self, d=6):
        super().__init__()
        self.attn = Attention(d)
        self.mlp = torch.nn.Linear(d, d)
        self.out = torch.nn.Linear(d, 2)

    def forward(self, x):
        h = x + self.attn(x)
        h = h + ACTIVATION(self.mlp(h))
        return self.out(h)

ACTIVATION = lambda z: z * torch.sigmoid(z)
torch.manual_seed(0)
model = Model()
x, y = torch.randn(4, 5, 6), torch.randint(0, 2, (4, 5))
loss = F.cross_entropy(model(x).reshape(-1, 2), y.reshape(-1))
loss.backward()
'''
# Version 2: the activation refactored (the same function: F.silu), and the attention scale
# changed from 1/sqrt(d) to 1/d (the bug).
VERSION_2 = VERSION_1.replace("ACTIVATION = lambda z: z * torch.sigmoid(z)",
                              "ACTIVATION = F.silu").replace("math.sqrt(self.d)", "self.d")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Trace files of the two versions, written by `backtrace trace -o` as a user would."""
    folder = tmp_path_factory.mktemp("versions")
    files = []
    for k, source in enumerate((VERSION_1, VERSION_2), start=1):
        script, out = folder / f"train_v{k}.py", folder / f"v{k}.json"
        script.write_text(textwrap.dedent(source))
        result = invoke("trace", "--level", "full", "-o", str(out), str(script))
        assert result.exit_code == 0, result.output
        files.append(out)
    return files


def test_two_versions_of_the_code_saved_as_json_name_the_changed_node(two_versions):
    v1, v2 = two_versions
    result = invoke("diff", str(v1), str(v2), "--format", "json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert set(data) >= {"first", "modules", "parameters"}
    first = data["first"]
    assert set(first) >= {"node", "op", "module", "what", "a", "b"}
    # The division by the scale, in the attention module: its inputs agree, its value does not.
    a = backtrace.Trace.from_json(v1.read_text())
    (div,) = [n.id for n in a.nodes if n.op == "div" and n.module == "attn"]
    assert (first["node"], first["op"], first["module"], first["what"]) == \
        (div, "div", "attn", "value")
    # Its value grew by sqrt(6): the relative error is sqrt(6) - 1... of the smaller one, 1 - 1/√6
    # as ‖a - b‖/‖a‖ with b = a·√6/6: |1 - √6/6| = 1 - 1/√6.
    assert first["rel_error"] == pytest.approx(1 - 1 / math.sqrt(6), rel=1e-6)
    assert first["a"]["shape"] == first["b"]["shape"] == [4, 5, 5]
    assert first["b"]["norm"] == pytest.approx(first["a"]["norm"] * math.sqrt(6) / 6, rel=1e-6)
    # The refactored activation is reported as nodes found in one version only, not as a cause.
    (refactor,) = data["unaligned"]
    assert [x.split()[1] for x in refactor["a"]] == ["sigmoid", "mul"]
    assert [x.split()[1] for x in refactor["b"]] == ["silu"]
    assert [d["what"] for d in data["divergences"]] == ["value"]
    modules = [m["module"] for m in data["modules"]]
    assert data["modules"] == sorted(data["modules"], key=lambda m: -m["rel_error"])
    assert {"attn", "attn.q", "mlp", "out"} <= set(modules)
    assert {p["name"] for p in data["parameters"]} == {
        f"{m}.{w}" for m in ("attn.q", "attn.k", "attn.v", "mlp", "out") for w in ("weight", "bias")}


def test_the_report_fits_80_columns_and_is_plain_off_a_terminal(two_versions):
    v1, v2 = two_versions
    result = invoke("diff", str(v1), str(v2))
    lines = result.output.splitlines()
    assert result.exit_code == 1 and "\x1b[" not in result.output
    assert max(len(line) for line in lines) <= 80
    assert lines[0].startswith("A and B differ beyond rtol=0.0001, atol=1e-06; the first ")
    text = "\n".join(lines)
    assert "First divergence in backward order" in text
    assert "attn): its inputs agree but its forward value differs" in text
    assert "Relative gradient error per module, largest first" in text
    assert "A has %" in text and "sigmoid" in text and "silu" in text
    report = backtrace.diff(v1, v2)
    for width in (80, 60):  # the boxed terminal view wraps to the terminal's width
        boxed = to_text(DiffView(report, "table"), width=width)
        assert max(len(line) for line in boxed.splitlines()) <= width
        assert "╭" in boxed
    markdown = to_text(DiffView(report, "markdown"), width=80)
    assert "## First divergence in backward order" in markdown and "| module" in markdown


def test_tolerances_decide_the_exit_code(two_versions, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(run(net()).to_json())
    b.write_text(run(net(1.01)).to_json())
    assert invoke("diff", str(a), str(b)).exit_code == 1
    assert invoke("diff", str(a), str(b), "--rtol", "0.02", "--atol", "0.01").exit_code == 0
    assert invoke("diff", str(a), str(a)).exit_code == 0
    # A looser rtol hides the 1% at its start, but it grows past the tolerance further on (the
    # elementwise rule meets LayerNorm's cancellations): the report says where it began.
    report = backtrace.diff(a, b, rtol=0.02, atol=3e-4)
    assert report.differ and report.first.module == "blocks.0.norm"
    earlier = report.earlier
    assert (earlier.node, earlier.what) == (node_of(run(net()), "swish", "blocks.1"), "local")
    assert earlier.rel_error == pytest.approx(0.01, rel=1e-4)
    assert report.to_dict()["earlier"]["node"] == earlier.node
    assert backtrace.diff(a, b).earlier is None  # at the default tolerance it is the first
    result = invoke("diff", str(a), str(b), "--rtol", "-1")
    assert result.exit_code == 2 and "-1" in result.output


def test_the_tolerance_is_the_one_rule_of_compare_close():
    from backtrace.compare import close

    base = backtrace.explain("f = x * 3", x=2.0)
    for x in (2.0 + 2e-4 * 2.0 * 0.99, 2.0 + 2e-4 * 2.0 * 1.01):
        other = backtrace.explain("f = x * 3", x=x)
        report = backtrace.diff(base, other, rtol=2e-4, atol=0)
        assert report.differ == (not close(2.0, x, 2e-4, 0))
    report = backtrace.diff(base, backtrace.explain("f = x * 3", x=2.5))
    assert (report.first.node, report.first.what) == ("x", "value")
    assert report.first.sentence() == "x: the runs start from different values of this input"


def test_a_different_starting_gradient_is_named_at_the_root():
    report = backtrace.diff(run(net()), run(net(), seed=2.0))
    first = report.first
    assert (first.op, first.what, first.root) == ("cross_entropy", "gradient", True)
    assert (first.a, first.b) == (1.0, 2.0)
    assert "started from a different gradient" in first.sentence()


def test_traces_of_different_models_are_one_clear_line(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.Flatten())
    with backtrace.trace(model=other, level="full") as t:
        other(torch.randn(2, 2, 5)).sum().backward()
    with pytest.raises(TraceMismatchError, match=r"^A and B are traces of different models: no "
                                                 r"parameter name in common \(A: blocks"):
        backtrace.diff(run(net()), t.trace)
    a, b = tmp_path / "mlp.json", tmp_path / "conv.json"
    a.write_text(run(net()).to_json())
    b.write_text(t.trace.to_json())
    result = invoke("diff", str(a), str(b))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith(
        "error: A and B are traces of different models: no parameter name in common (A: ")
    formula = tmp_path / "formula.json"
    formula.write_text(backtrace.explain("f = x * y", x=1, y=2).to_json())
    result = invoke("diff", str(a), str(formula))
    assert result.exit_code == 2 and "A is a torch trace and B a reference trace" in result.output


def test_unreadable_files_are_one_line_and_exit_1(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(backtrace.explain("f = x * y", x=1, y=2).to_json())
    (tmp_path / "bad.json").write_text("{not json")
    for name in ("missing.json", "bad.json"):
        result = invoke("diff", str(good), str(tmp_path / name))
        assert result.exit_code == 1 and result.output.count("\n") == 1
        assert result.output.startswith("error: ")


def test_python_api_takes_tracers_and_paths(tmp_path):
    model = net()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, generator=g)
    tracers = []
    for _ in range(2):
        with backtrace.trace(model=model) as t:
            model(x).sum().backward()
        tracers.append(t)
    assert not backtrace.diff(*tracers).differ
    path = tmp_path / "t.json"
    path.write_text(tracers[0].trace.to_json())
    assert not backtrace.diff(path, str(path)).differ
    with pytest.raises(backtrace.UsageError, match="B is a int"):
        backtrace.diff(path, 3)
    data = backtrace.diff(tracers[0], tracers[1]).to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_diff_help_teaches_and_loads_no_heavy_package():
    import subprocess
    import sys

    code = ("import sys\nfrom backtrace.cli import cli\n"
            "try:\n    cli.main(['diff', '--help'], standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'rich', 'graphviz', 'matplotlib')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "backtrace diff fp32.json bf16.json" in done.stdout and "Exit codes: 0" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()[:-1]) <= 80


def test_a_node_in_one_run_only_is_reported_as_such_and_compared_at_its_boundary():
    def run_with(scale):
        torch.manual_seed(0)
        a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)
        model = torch.nn.ModuleDict({"a": a, "b": b})
        x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
        with backtrace.trace(model=model, level="full") as t:
            h = torch.tanh(a(x))
            if scale is not None:
                h = h * scale
            b(h).pow(2).sum().backward()
        return t.trace, h

    plain, h = run_with(None)
    noop, _ = run_with(1.0)
    report = backtrace.diff(plain, noop, names=("v1", "v2"))
    assert not report.differ
    assert [(u.a, u.b) for u in report.unaligned] == [((), ("%5 mul",))]
    scaled, h2 = run_with(1.1)
    report = backtrace.diff(plain, scaled, names=("v1", "v2"))
    first = report.first
    assert (first.what, first.region, first.node_b) == ("value", ((), ("%5 mul",)), "%5")
    assert first.rel_error == pytest.approx(rel(h, h2), rel=1e-6)  # the value it passes on
    assert first.sentence(report.names) == (
        "the node %5 mul found in v2 only, compared at its boundary: its inputs agree but the value "
        "it passes to %5 linear (v2: %7) differs")
    assert report.line().endswith("is %5 mul (v2 only), its forward value")
    # The other way round: the node is in the first run only.
    report = backtrace.diff(scaled, plain)
    assert report.first.region == (("%5 mul",), ()) and report.first.node == "%5"


def test_different_data_is_found_at_the_first_node_that_reads_it():
    def run_on(x):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        with backtrace.trace(model=model, level="full") as t:
            model(x).sum().backward()
        return t.trace

    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    bad = x.clone()
    bad[1, 1] = float("nan")
    report = backtrace.diff(run_on(x), run_on(bad))
    first = report.first
    assert (first.op, first.module, first.what) == ("linear", "0", "value")
    assert "an input that needs no gradient (data) is not recorded" in first.sentence()
    params = {p.name: p.rel_error for p in report.parameters}
    assert first.rel_error == params["0.weight"] == math.inf
    assert params["2.bias"] == 0  # ∂L/∂b of the last layer is 1 per row, whatever the data
    data = report.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False))["first"]["rel_error"] == "inf"
    assert not backtrace.diff(run_on(bad), run_on(bad)).differ  # NaN where both have NaN agrees
