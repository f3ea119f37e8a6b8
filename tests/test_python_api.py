"""Using backtrace from Python as from the command line: a Trace that shows itself in a plain REPL,
one public function per table the CLI prints, every drawing flag a keyword of export and
to_graphviz, traces of sparse embeddings and complex tensors that export and display."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

import backtrace
from backtrace.cli.render_cmd import render
from backtrace.crosscheck import crosscheck
from backtrace.render.options import Options

from .conftest import TEXTBOOK


def lecture():
    return backtrace.explain(TEXTBOOK[0], **TEXTBOOK[1])


def test_print_shows_the_tables_and_repr_is_one_line():
    t = lecture()
    assert repr(t) == "<Trace reference: f = -12, 5 nodes, 2 backward steps>"
    assert repr(t.nodes) == "<5 items, built when read>"
    text = str(t)
    assert "Forward pass" in text and "∂f/∂z = %0" in text and "∂f/∂x = ∂f/∂%0 · ∂%0/∂x" in text
    done = subprocess.run([sys.executable, "-c", "import backtrace\n"
                           "print(backtrace.explain('f=(x+y)*z', x=-2, y=5, z=-4))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "LazySeq" not in done.stdout and "Backward pass" in done.stdout


def test_show_prints_what_explain_prints(capsys):
    result = crosscheck(TEXTBOOK[0], TEXTBOOK[1])
    backtrace.show(result, "plain")
    out = capsys.readouterr().out
    assert "Forward pass" in out and "Torch engine (float64)" in out
    assert out.rstrip().endswith("engines agree, max |Δ| = 0")
    assert all(line == line.rstrip() for line in out.splitlines())  # no padding at line ends


def test_show_ops_prints_what_backtrace_ops_prints(capsys):
    backtrace.show_ops("plain")
    out = capsys.readouterr().out
    assert "d(a*b)/da = b" in out and out.strip().splitlines()[-1].startswith("constants: pi")


def test_every_drawing_flag_is_a_keyword_of_export_and_to_graphviz(tmp_path):
    flags = {p.name for p in render.params if p.name not in ("trace_file", "outputs", "fmt")}
    assert {"depth", "hide", "budget", "mode", "colour", "direction", "dot", "timeout",
            "steps_dir"} <= flags
    options = {f.name for f in Options.__dataclass_fields__.values()}
    assert flags - {"steps_dir"} <= options  # the same names in Python
    t = lecture()
    chosen = dict(depth=1, hide=("constants",), budget=50, mode="forward", colour="kind",
                  direction="TB", timeout=30.0)
    backtrace.export(t, tmp_path / "g.svg", steps=tmp_path / "steps", **chosen)
    assert (tmp_path / "g.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == [
        "step-000.svg", "step-001.svg", "step-002.svg"]
    g = t.to_graphviz(**chosen)
    assert "rankdir=TB" in g.source and ">grad<" not in g.source  # forward mode, top down
    with pytest.raises(backtrace.UsageError, match="unknown option"):
        backtrace.export(t, tmp_path / "h.svg", sideways=True)


def test_sparse_embedding_at_level_full_exports_and_displays(tmp_path):
    emb = torch.nn.Embedding(6, 3, sparse=True)
    with backtrace.trace(model=emb, level="full") as tracer:
        emb(torch.tensor([1, 4, 1])).pow(2).sum().backward()
    t = tracer.trace
    assert emb.weight.grad.is_sparse
    for suffix in ("svg", "png", "json", "txt", "md", "html"):
        backtrace.export(t, tmp_path / f"e.{suffix}")
    assert "<svg" in t._repr_svg_() and "Backward call 1" in str(t)
    back = backtrace.Trace.from_json((tmp_path / "e.json").read_text())
    assert torch.equal(back.grads["weight"], emb.weight.grad.to_dense())
    norm = float(emb.weight.grad.to_dense().norm())
    assert f"‖·‖={norm:.6g}" in (tmp_path / "e.txt").read_text()


def test_complex_tensors_keep_their_imaginary_part(tmp_path):
    x = torch.tensor([0.646 - 0.123j, 1.5 + 2.0j], requires_grad=True)
    with backtrace.trace(level="full", names={"x": x}) as tracer:
        (x * x).abs().sum().backward()
    t = tracer.trace
    data = json.loads(t.to_json())
    leaf = next(n for n in data["nodes"] if n["id"] == "x")
    assert leaf["value"]["tensor"]["imag"] == pytest.approx([-0.123, 2.0])
    back = backtrace.Trace.from_json(t.to_json())
    assert torch.equal(back.node("x").value, x.detach()) and torch.equal(back.grads["x"], x.grad)
    assert back == t
    scalar = backtrace.Trace.from_json(json.dumps({**data, "value": None, "nodes": [
        {**data["nodes"][0], "value": {"complex": [0.646, -0.123]}}, *data["nodes"][1:]]}))
    assert scalar.nodes[0].value == complex(0.646, -0.123)
    assert "0.646-0.123j" in str(scalar)


def test_split_wires_carry_their_own_output():
    x = torch.randn(4, 6, requires_grad=True)
    with backtrace.trace(names={"x": x}) as tracer:
        a, b, c = torch.split(x, [1, 2, 3], dim=1)
        (a.sum() * 2 + b.exp().sum() - c.pow(2).sum()).backward()
    source = backtrace.render.draw.draw(tracer.trace, "dot")
    split = next(n for n in tracer.trace.nodes if n.op == "split_with_sizes" or "Split" in
                 str(n.meta.get("torch_type")))
    index = [n.id for n in tracer.trace.nodes].index(split.id)
    wires = [line for line in source.splitlines() if re.match(rf"\s*n{index} -> ", line)]
    shapes = sorted(re.search(r"label=<(?:<TABLE[^>]*>)?(?:<TR><TD[^>]*>)?(\[[^\]]+\])", w).group(1)
                    for w in wires)
    assert shapes == ["[4×1]", "[4×2]", "[4×3]"]  # each wire its own output, not all three
