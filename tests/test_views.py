"""Tables that read at any width: Markdown a renderer turns into tables, nothing cut at 60 or 80
columns (numbers whole, names never elided into one another), plain output that never wraps, and a
`backtrace trace` table that fits its terminal and says once what it did not compute."""
from __future__ import annotations

import re

import pytest
from markdown_it import MarkdownIt

from backtrace import explain
from backtrace.derive import derivations
from backtrace.render import to_text
from backtrace.render.formats import view
from backtrace.render.tables import elide, elide_distinct, table
from backtrace.render.terminal import ExplainView, derivation_line
from backtrace.render.torch_table import TorchTraceView
from backtrace.traces import Edge, Step, Trace, TraceNode
from backtrace.values import TensorStats, describe

from .conftest import NEURON, TEXTBOOK


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table markdown-it finds: rows of cell texts, the header first."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables, rows, row = [], None, None
    for tok in tokens:
        if tok.type == "table_open":
            rows = []
        elif tok.type == "table_close":
            tables.append(rows)
            rows = None
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            rows.append(row)
            row = None
        elif tok.type == "inline" and rows is not None and row is not None:
            row.append(tok.content)
    return tables


def test_markdown_renders_every_table_with_its_cells():
    t = explain(TEXTBOOK[0], **TEXTBOOK[1])
    text = view(t, "markdown")
    found = markdown_tables(text)
    assert len(found) == 2  # forward and backward (the torch section is checked below)
    forward, backward = found
    assert forward[0] == ["node", "expression", "value", "gradient"]
    assert forward[1:] == [["x", "input", "-2", "-4"], ["y", "input", "5", "-4"],
                           ["%0", "x + y", "3", "-4"], ["z", "input", "-4", "3"],
                           ["f", "%0 * z", "-12", "1"]]
    assert backward[1] == ["1", "f", "1", "%0", "∂f/∂%0 = z", "-4", "-4"]
    # The derivations are list items of code, so * and _ are never read as emphasis.
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<code>∂f/∂x = ∂f/∂%0 · ∂%0/∂x = (-4) · (1) = -4</code>" in html and "<em>" not in html


def test_markdown_of_the_cli_keeps_pipes_in_one_cell(tmp_path):
    from click.testing import CliRunner

    from backtrace.cli import cli

    result = CliRunner().invoke(cli, ["explain", *TEXTBOOK[0:1], "x=-2", "y=5", "z=-4",
                                      "--format", "markdown"])
    assert result.exit_code == 0, result.output
    found = markdown_tables(result.output)
    assert len(found) == 3
    assert found[2][0] == ["node", "torch node", "value", "gradient", "|Δ| value", "|Δ| gradient"]
    assert all(len(row) == 6 for row in found[2])


@pytest.mark.parametrize("width", [60, 80])
def test_explain_at_narrow_widths_cuts_nothing(width):
    t = explain(NEURON[0], **NEURON[1])
    text = to_text(ExplainView(t, "table"), width=width)
    assert max(map(len, text.splitlines())) <= width
    assert "…" not in text  # no number, name or header cut
    words = set(re.findall(r"\S+", text))
    for n in t.nodes:  # every value and gradient whole
        for v in (n.value, n.grad):
            if v is not None:
                assert describe(v) in words, (n.id, describe(v))


def test_plain_output_never_wraps():
    t = explain(NEURON[0], **NEURON[1])
    from backtrace.render.console import PIPE_WIDTH

    text = to_text(ExplainView(t, "plain"), width=PIPE_WIDTH)
    lines = text.splitlines()
    for d in derivations(t):  # each derivation is one line, as long as it is
        assert derivation_line(d) in lines


def test_names_lose_their_middle_but_never_read_alike():
    names = ["transformer.h.0.ln_1.weight", "transformer.h.1.ln_1.weight",
             "transformer.ln_f.weight", "transformer.ln_f.bias"]
    shown = elide_distinct(names, 12)
    assert len(set(shown.values())) == 4
    assert all(v.endswith(("weight", "bias")) for v in shown.values())
    assert shown["transformer.h.0.ln_1.weight"] != shown["transformer.h.1.ln_1.weight"]
    assert "0" in shown["transformer.h.0.ln_1.weight"] and "1" in shown["transformer.h.1.ln_1.weight"]
    assert elide("transformer.h.0.self_attn.out_proj.weight", 20) == "…h.0…out_proj.weight"
    assert elide("short", 20) == "short"


def test_a_table_too_narrow_for_columns_stacks_its_rows():
    t = table(["node", "expression", "value"], "table", right=("value",))
    t.add_row("%0", "w0 * x0 + a long expression", "[2×4×16] ‖·‖=0.177862")
    text = to_text(t, width=30)
    assert max(map(len, text.splitlines())) <= 30
    assert "‖·‖=0.177862" in text and "[2×4×16]" in text and "%0" in text


def stats(*shape, norm=1.0):
    return TensorStats(tuple(shape), "float32", norm, 0.0, norm)


def torch_like_trace(blocks: int = 3) -> Trace:
    """A chain through blocks h.0 ... h.N with long parameter names, Jacobians mostly too large."""
    nodes, steps, prev = [TraceNode("x", "input", (), "input", stats(8, 16), stats(8, 16),
                                    "input", {"module": "", "name": "x"})], [], "x"
    for k in range(blocks):
        w = f"transformer.h.{k}.self_attn.out_proj.weight"
        nodes.append(TraceNode(w, "input", (), "input", stats(16, 16), stats(16, 16, norm=0.5),
                               "input", {"module": f"transformer.h.{k}.self_attn.out_proj",
                                         "name": w}))
        node = f"%{k}"
        nodes.append(TraceNode(node, "linear", (prev, w), "", stats(8, 16), stats(8, 16), "op",
                               {"module": f"transformer.h.{k}.self_attn.out_proj", "name": ""}))
        steps.insert(0, Step(0, node, stats(8, 16), (
            Edge(0, prev, None, "Jacobian 128×128 (not computed: too large)", stats(8, 16)),
            Edge(1, w, None, "Jacobian 128×256 (not computed: too large)", stats(16, 16)))))
        prev = node
    steps = [Step(i, s.node, s.upstream, s.edges) for i, s in enumerate(steps)]
    return Trace("torch", prev, tuple(nodes), tuple(steps), {"call": 1, "level": "stats"})


@pytest.mark.parametrize("width", [60, 80, 120])
def test_trace_table_fits_and_summarises_what_it_did_not_compute(width):
    text = to_text(TorchTraceView(torch_like_trace(), "table"), width=width)
    assert max(map(len, text.splitlines())) <= width
    assert "too large" not in text.replace("Jacobians not computed (larger", "")
    assert text.count("6 of 6 Jacobians not computed") == 1 and "up to 128×256" in text
    leaves = text.split("reaching each named leaf")[1]
    shown = [w for w in re.findall(r"\S*weight", leaves)]
    assert len(shown) == 3 and len(set(shown)) == 3, shown  # apart, each with its block's number
    assert [any(str(k) in w for w in shown) for k in range(3)] == [True] * 3
