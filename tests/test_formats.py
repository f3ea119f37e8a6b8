"""The one format registry: every registered format round-trips through `--format` (printable ones)
and every suffix through `-o`, on explain, render and trace; a format without a check here fails."""
from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from backtrace.cli import cli
from backtrace.render import layout
from backtrace.render.formats import FORMATS, by_suffix, suffixes
from backtrace.traces import Trace

from .pages import page_data
from .test_export import png_size, svg_texts

LECTURE = ["f=(x+y)*z", "--x", "-2", "--y", "5", "--z", "-4"]
SCRIPT = textwrap.dedent("""
    import torch, torch.nn as nn, torch.nn.functional as F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    F.cross_entropy(model(x), y).backward()
""")


def text(data: bytes) -> str:
    return data.decode("utf-8")


def explorer_data(data: bytes) -> dict:
    """The data of an explorer page: the whole trace, node by node."""
    found = page_data(text(data))
    assert len(found["nodes"]) > 4 and found["steps"]
    return found


# What each format must hold, for a formula trace (f = -12) and for a traced model; one per format.
CHECKS = {
    "table": lambda d, model: "╭" in text(d) and ("linear" if model else "∂f/∂x") in text(d),
    "plain": lambda d, model: "Backward" in text(d) and "╭" not in text(d)
    and ("linear" if model else "∂f/∂x = ∂f/∂%0 · ∂%0/∂x") in text(d),
    "markdown": lambda d, model: "## Backward" in text(d) and "|" in text(d),
    "json": lambda d, model: Trace.from_json(text(d)).engine in ("reference", "torch"),
    "dot": lambda d, model: text(d).startswith("digraph backtrace {"),
    "svg": lambda d, model: model or "-12" in svg_texts(d),
    "png": lambda d, model: png_size(d)[0] > 100,
    "pdf": lambda d, model: d.startswith(b"%PDF-"),
    "html": lambda d, model: explorer_data(d)["engine"] == ("torch" if model else "reference"),
}


def test_every_format_has_a_check_and_suffixes_are_unique():
    assert set(CHECKS) == set(FORMATS)
    assert len(suffixes()) == len(set(suffixes()))
    assert all(by_suffix(f"x{s.upper()}").name == by_suffix(f"x{s}").name for s in suffixes())


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """How to run each command so that it shows a trace: explain, render of a saved trace, trace."""
    folder = tmp_path_factory.mktemp("sources")
    saved, script = folder / "t.json", folder / "train.py"
    assert CliRunner().invoke(cli, ["explain", *LECTURE, "-o", str(saved)]).exit_code == 0
    script.write_text(SCRIPT)
    return {"explain": (["explain", *LECTURE], [], False),
            "render": (["render", str(saved)], [], False),
            "trace": (["trace"], [str(script)], True)}


@pytest.mark.parametrize("command", ["explain", "render", "trace"])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_through_every_command(name, command, sources, tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "system_binary", lambda: None)  # the same PDF path everywhere
    head, tail, model = sources[command]
    fmt = FORMATS[name]
    if fmt.printable:
        result = CliRunner().invoke(cli, [*head, "--format", name, *tail])
        assert result.exit_code == 0, result.output
        # On click's runner stdout is no terminal: the table format is still asked for by name.
        out = result.output.encode()
        if name == "json":
            out = out[: out.rindex(b"}") + 1]  # explain prints verdict lines only off json
        assert CHECKS[name](out, model), result.output[:500]
    for suffix in fmt.suffixes:
        path = tmp_path / f"out.{suffix}"
        result = CliRunner().invoke(cli, [*head, "-o", str(path), *tail])
        assert result.exit_code == 0, result.output
        assert CHECKS[name](path.read_bytes(), model), path


def test_json_round_trips_to_an_equal_trace(sources, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    head, _, _ = sources["explain"]
    assert CliRunner().invoke(cli, [*head, "-o", str(a)]).exit_code == 0
    assert CliRunner().invoke(cli, ["render", str(a), "-o", str(b)]).exit_code == 0
    assert Trace.from_json(a.read_text()) == Trace.from_json(b.read_text())
    assert json.loads(a.read_text()) == json.loads(b.read_text())


def test_every_output_is_checked_before_any_is_written(tmp_path):
    good, bad = tmp_path / "a.svg", tmp_path / "b.gif"
    result = CliRunner().invoke(cli, ["explain", *LECTURE, "-o", str(good), "-o", str(bad)])
    assert result.exit_code == 2 and "cannot tell the format of" in result.output
    assert not good.exists() and not bad.exists()


def test_svg_of_a_model_parses(sources, tmp_path):
    head, tail, _ = sources["trace"]
    path = tmp_path / "m.svg"
    assert CliRunner().invoke(cli, [*head, "-o", str(path), *tail]).exit_code == 0
    root = ET.fromstring(path.read_bytes())
    assert root.tag.endswith("svg") and Path(path).stat().st_size > 1000
