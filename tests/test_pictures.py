"""Pictures that read well: every label inside its box (measured from the SVG's own geometry with
Helvetica's metrics, independently of the layout engine), no font warnings, the embedded engine in
a fresh process with no system Graphviz, and default pictures of real models that fit a screen."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import backtrace
from backtrace import explain
from backtrace.render.draw import draw
from backtrace.render.fit import MAX_ASPECT, SCREEN_PT
from backtrace.render.layout import embedded_binary

from . import svggeom
from .conftest import NEURON, TEXTBOOK

FANOUT = ("a = x * x; b = x + 1; f = a * b", {"x": 3.0})
# The one warning graphviz-pure gives on any non-ASCII text (∂ × ‖): it measures those bytes as
# spaces. Harmless here because the geometry check below proves every label fits anyway.
NON_ASCII = "no value for width of non-ASCII character"


def traced(model: nn.Module, *inputs: torch.Tensor, loss=lambda out: out.pow(2).mean()):
    with backtrace.trace(model=model) as t:
        loss(model(*inputs)).backward()
    return t.trace


@pytest.fixture(scope="module")
def models():
    """A real MLP, one TransformerEncoderLayer and a 12-layer transformer, traced."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
    block = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    stack = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0,
                                                             batch_first=True), 12,
                                  enable_nested_tensor=False)
    tokens = torch.randn(2, 6, 32)  # needs no grad: the first block differs at its input
    return {"mlp": traced(mlp, x, loss=lambda out: nn.functional.cross_entropy(out, y)),
            "transformer block": traced(block, tokens),
            "12-layer transformer": traced(stack, tokens)}


def formulas():
    return {"textbook": explain(TEXTBOOK[0], **TEXTBOOK[1]),
            "sigmoid neuron": explain(NEURON[0], **NEURON[1]),
            "fan-out": explain(FANOUT[0], **FANOUT[1])}


def engine_warnings(dot_source: str) -> list[str]:
    """What the embedded engine prints while laying the DOT out (nothing is hidden from it)."""
    done = subprocess.run([str(embedded_binary()), "-Tsvg"], input=dot_source.encode(),
                          capture_output=True, timeout=120, check=True)
    return [line for line in done.stderr.decode().splitlines() if line.strip()]


@pytest.mark.parametrize("name", ["textbook", "sigmoid neuron", "fan-out"])
def test_formula_labels_fit_their_boxes(name):
    trace = formulas()[name]
    svg = draw(trace, "svg")
    assert svggeom.problems(svg) == []
    assert [w for w in engine_warnings(draw(trace, "dot")) if NON_ASCII not in w] == []


def system_dot() -> str:
    """A system Graphviz to check against ($BACKTRACE_DOT or `dot` on PATH), or skip."""
    import shutil

    found = os.environ.get("BACKTRACE_DOT") or shutil.which("dot")
    if not found:
        pytest.skip("no system Graphviz here (set BACKTRACE_DOT=/path/to/dot to check one)")
    return found


@pytest.mark.parametrize("name", ["textbook", "sigmoid neuron", "fan-out"])
def test_formula_labels_fit_with_a_system_dot(name):
    svg = draw(formulas()[name], "svg", dot=system_dot())
    assert svggeom.problems(svg) == []


def test_traced_transformer_labels_fit_their_boxes(models):
    trace = models["transformer block"]
    svg = draw(trace, "svg")
    texts = [t.text for t in svggeom.parse(svg)[1]]
    assert "MultiheadAttention" not in texts and any("Backward0" in t for t in texts)
    assert svggeom.problems(svg) == []
    assert [w for w in engine_warnings(draw(trace, "dot")) if NON_ASCII not in w] == []


def test_the_geometry_check_catches_an_overflowing_label():
    # The old font list, measured by graphviz-pure as Times, is narrower than the Helvetica drawn.
    source = draw(formulas()["fan-out"], "dot").replace("fontname=Helvetica",
                                                        'fontname="Helvetica,Arial,sans-serif"')
    done = subprocess.run([str(embedded_binary()), "-Tsvg"], input=source.encode(),
                          capture_output=True, check=True)
    assert any("Falling back to 'Times'" in w for w in done.stderr.decode().splitlines())
    assert any("(9) + (12) + (12) = 33" in p for p in svggeom.problems(done.stdout))


def test_long_type_names_lose_their_middle():
    from backtrace.render.labels import LONG_NAME, elide

    name = "ScaledDotProductFlashAttentionForCpuBackward0"
    short = elide(name, LONG_NAME)
    assert len(short) == LONG_NAME and short.startswith("ScaledDotProd") and short.endswith("Backward0")
    assert elide("MulBackward0", LONG_NAME) == "MulBackward0"


@pytest.mark.parametrize("name", ["mlp", "transformer block", "12-layer transformer"])
def test_default_picture_of_a_model_fits_a_screen(models, name):
    svg = draw(models[name], "svg")
    width, height = svggeom.size(svg)
    # Fit to 1,920 px (1 pt = 4/3 px), the smallest (10-pt) text must stay at 8 pt or more.
    assert 1920 / (width * 4 / 3) * 10 >= 8, (width, height)
    assert 1 / MAX_ASPECT <= width / height <= MAX_ASPECT, (width, height)
    assert width <= SCREEN_PT
    assert svggeom.problems(svg) == []


def test_twelve_blocks_are_drawn_once_as_twelve(models):
    folded = backtrace.render.draw.prepare(models["12-layer transformer"],
                                           backtrace.render.options.Options())
    assert "layers.{0-11} ×12" in folded.meta["fold"]["clusters"].values()
    assert any("12 blocks of the same structure" in n for n in folded.meta["fold"]["notes"])


def test_to_graphviz_in_a_fresh_process_without_a_system_dot(tmp_path):
    # No PATH at all: no `dot` to find; the embedded engine sits beside the interpreter.
    script = textwrap.dedent("""
        import backtrace
        t = backtrace.explain("f=(x+y)*z", x=-2, y=5, z=-4)
        g = t.to_graphviz()
        svg = g.pipe(format="svg").decode()
        assert "<svg" in svg and "-12" in svg, svg[:200]
        g.render(filename="g", directory=%r, format="png")
        print("ok")
    """ % str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k not in ("BACKTRACE_DOT", "PATH")}
    env["PATH"] = str(tmp_path / "empty")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok" and done.stderr == ""  # no font warning either
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
