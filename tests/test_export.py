"""Export by file suffix: SVG/PNG/DOT through the embedded graphviz-pure, PDF through a system dot or
CairoSVG, the binary choice (embedded, BACKTRACE_DOT, --dot), timeouts and failures as one line."""
from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from backtrace import explain
from backtrace.cli import cli
from backtrace.render.formats import FORMATS, export
from backtrace.render import layout
from backtrace.errors import RenderError
from backtrace.render.draw import draw
from backtrace.render.layout import run_dot

from .conftest import NEURON, TEXTBOOK
from .pages import page_data

LECTURE = ["f=(x+y)*z", "--x", "-2", "--y", "5", "--z", "-4"]
SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_texts(data: bytes) -> list[str]:
    """Every <text> of an SVG, parsed as XML (fails on malformed SVG)."""
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg"
    return [t.text or "" for t in root.iter(f"{SVG_NS}text")]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def lecture():
    formula, values = TEXTBOOK
    return explain(formula, **values)


def test_exports_registered_by_suffix():
    assert {"json", "svg", "png", "pdf", "dot", "html"} <= {s for f in FORMATS.values()
                                                            for s in f.suffixes}


def test_svg_parses_and_holds_every_label_and_value(lecture):
    texts = svg_texts(draw(lecture, "svg"))
    joined = " ".join(texts)
    for node in lecture.nodes:
        assert node.id in texts
    for value in ["-2", "5", "3", "-4", "-12"]:  # the lecture's forward values
        assert value in texts
    assert "1 × -4 = -4" in joined and "-4 × 1 = -4" in joined  # backward on the wires


def test_neuron_svg_has_its_gradients():
    formula, values = NEURON
    texts = svg_texts(draw(explain(formula, **values), "svg"))
    # CS231n: ∂f/∂w0 = -0.196612, ∂f/∂x0 = 0.393224 (to 6 significant digits).
    assert "-0.196612" in texts and "0.393224" in texts


def test_png_is_a_plausible_image(lecture):
    width, height = png_size(draw(lecture, "png"))
    assert 200 < width < 3000 and 150 < height < 3000


def test_embedded_engine_is_the_default_and_is_deterministic(lecture, monkeypatch):
    import graphviz.backend.dot_command as dot_command

    monkeypatch.delenv("BACKTRACE_DOT", raising=False)
    expected = Path(sysconfig.get_path("scripts")) / "graphviz-pure"
    assert layout.choose_binary() == expected
    first = draw(lecture, "svg")
    assert dot_command.DOT_BINARY == expected  # the graphviz package now uses it too
    assert draw(lecture, "svg") == first
    assert lecture.to_graphviz().pipe(format="svg") == first  # graphviz.Digraph.pipe agrees


def test_repr_svg_for_jupyter(lecture):
    texts = svg_texts(lecture._repr_svg_().encode())
    assert "x + y" in texts and "%0" in texts


def test_pdf_through_cairosvg_when_no_system_dot(lecture, monkeypatch):
    monkeypatch.setattr(layout, "system_binary", lambda: None)
    pdf = draw(lecture, "pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and b"/Page" in pdf


def test_pdf_error_says_how_to_get_pdf(lecture, monkeypatch):
    monkeypatch.setattr(layout, "system_binary", lambda: None)
    monkeypatch.setitem(sys.modules, "cairosvg", None)  # import fails as if not installed
    with pytest.raises(RenderError) as err:
        draw(lecture, "pdf")
    message = str(err.value)
    assert "\n" not in message and "apt-get install graphviz" in message and "backtrace[pdf]" in message


def fake_dot(tmp_path: Path, body: str) -> Path:
    """A stand-in for a system `dot`: a shell script."""
    script = tmp_path / "dot"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_backtrace_dot_selects_a_system_graphviz(lecture, tmp_path, monkeypatch):
    real = Path(sysconfig.get_path("scripts")) / "graphviz-pure"
    marker = tmp_path / "called"
    script = fake_dot(tmp_path, f'echo "$@" > {marker}\nexec {real} "$@"')
    monkeypatch.setenv("BACKTRACE_DOT", str(script))
    svg = draw(lecture, "svg")
    assert marker.read_text().split() == ["-Kdot", "-Tsvg"]
    monkeypatch.delenv("BACKTRACE_DOT")
    assert svg == draw(lecture, "svg")  # same engine behind the script: same picture
    marker.unlink()
    draw(lecture, "svg", dot=str(script))  # the --dot flag does the same
    assert marker.exists()


def test_pdf_uses_the_system_dot_when_present(lecture, tmp_path, monkeypatch):
    marker = tmp_path / "args"
    script = fake_dot(tmp_path, f'echo "$@" > {marker}\nprintf "%%PDF-1.5 fake"')
    monkeypatch.setenv("BACKTRACE_DOT", str(script))
    assert draw(lecture, "pdf") == b"%PDF-1.5 fake"
    assert marker.read_text().split() == ["-Kdot", "-Tpdf"]


def test_timeout_is_one_line_and_leaves_no_file(lecture, tmp_path):
    slow = fake_dot(tmp_path, "sleep 5")
    target = tmp_path / "g.svg"
    target.write_text("old picture")
    with pytest.raises(RenderError) as err:
        export(lecture, target, dot=str(slow), timeout=0.3)
    assert "took longer than 0.3 s" in str(err.value) and "\n" not in str(err.value)
    assert target.read_text() == "old picture"  # never a half-written file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".g.svg")] == []


def test_failing_graphviz_is_one_line(lecture, tmp_path):
    broken = fake_dot(tmp_path, 'echo "Error: <stdin>: syntax error in line 1" >&2; exit 1')
    with pytest.raises(RenderError, match=r"failed to render svg: Error: <stdin>: syntax error"):
        run_dot("digraph {", "svg", dot=broken)


def test_missing_dot_path_is_a_usage_error(lecture, tmp_path):
    result = CliRunner().invoke(cli, ["explain", *LECTURE, "-o", str(tmp_path / "g.svg"),
                                      "--dot", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no executable Graphviz" in result.output
    assert not (tmp_path / "g.svg").exists()


def check_file(path: Path) -> None:
    """Each format holds what it should: the lecture's graph."""
    data = path.read_bytes()
    suffix = path.suffix
    if suffix == ".svg":
        assert "-12" in svg_texts(data)
    elif suffix == ".png":
        assert png_size(data)[0] > 200
    elif suffix == ".pdf":
        assert data.startswith(b"%PDF-")
    elif suffix == ".dot":
        assert data.startswith(b"digraph backtrace {") and b">-12</TD>" in data
    elif suffix == ".html":
        nodes = {n["id"]: n for n in page_data(data.decode())["nodes"]}
        assert nodes["f"]["value"]["num"] == -12 and nodes["x"]["grad"]["num"] == -4
    elif suffix == ".json":
        assert json.loads(data)["grads"] == {"x": -4.0, "y": -4.0, "z": 3.0}


SUFFIXES = [".svg", ".png", ".pdf", ".dot", ".html", ".json"]


def test_every_format_through_explain(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "system_binary", lambda: None)  # same PDF path everywhere
    outs = [tmp_path / f"g{s}" for s in SUFFIXES]
    args = [a for p in outs for a in ("-o", str(p))]
    result = CliRunner().invoke(cli, ["explain", *LECTURE, *args])
    assert result.exit_code == 0, result.output
    for path in outs:
        check_file(path)


def test_every_format_through_render(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "system_binary", lambda: None)
    trace_file = tmp_path / "t.json"
    assert CliRunner().invoke(cli, ["explain", *LECTURE, "-o", str(trace_file)]).exit_code == 0
    outs = [tmp_path / f"r{s}" for s in SUFFIXES]
    result = CliRunner().invoke(cli, ["render", str(trace_file),
                                      *[a for p in outs for a in ("-o", str(p))]])
    assert result.exit_code == 0, result.output
    for path in outs:
        check_file(path)
    # Without -o, DOT goes to stdout, equal to the .dot file.
    result = CliRunner().invoke(cli, ["render", str(trace_file)])
    assert result.output == (tmp_path / "r.dot").read_text()


def test_render_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(cli, ["render", str(bad), "-o", str(tmp_path / "g.svg")])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "not a backtrace trace" in result.output
    result = CliRunner().invoke(cli, ["render", str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "cannot read" in result.output
    good = tmp_path / "t.json"
    CliRunner().invoke(cli, ["explain", *LECTURE, "-o", str(good)])
    result = CliRunner().invoke(cli, ["render", str(good), "-o", str(tmp_path / "g.gif")])
    assert result.exit_code == 2 and "cannot tell the format" in result.output
    result = CliRunner().invoke(cli, ["render", str(good), "--hide", "weights"])
    assert result.exit_code == 2 and "choose from accumulate, constants" in result.output


def test_no_dot_on_path(tmp_path):
    # PATH cleared: no system Graphviz and not even the venv's bin on PATH; the embedded engine is
    # found through sysconfig.
    env = {k: v for k, v in os.environ.items() if k not in ("BACKTRACE_DOT",)}
    env["PATH"] = ""
    out = tmp_path / "g.svg"
    png = tmp_path / "g.png"
    proc = subprocess.run([sys.executable, "-m", "backtrace", "explain", *LECTURE, "-o", str(out),
                           "-o", str(png)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert shutil.which("dot", path=env["PATH"]) is None
    assert "-12" in svg_texts(out.read_bytes()) and png_size(png.read_bytes())[0] > 200


def test_timeout_bounds_the_whole_render_not_each_layout(lecture, tmp_path, monkeypatch):
    """The default picture lays out more than one candidate (fit.choose): each gets what is left of
    one timeout, so a slow Graphviz cannot take the timeout once per candidate."""
    import time

    from backtrace.render import fit

    calls = []
    real = fit.run_dot

    def slow(source, fmt, dot=None, timeout=60.0, total=None):
        calls.append(timeout)
        time.sleep(0.25)
        return real(source, fmt, dot, timeout, total)

    monkeypatch.setattr(fit, "run_dot", slow)
    monkeypatch.setattr(fit, "misfit", lambda width, height: 2.0)  # no candidate fits: try all
    start = time.monotonic()
    with pytest.raises(RenderError, match=r"took longer than 0\.4 s"):
        export(lecture, tmp_path / "g.svg", timeout=0.4)
    assert time.monotonic() - start < 1.5 and len(calls) >= 2
    assert calls[1] < calls[0] <= 0.4  # the second layout got only what the first left
    assert not (tmp_path / "g.svg").exists()
