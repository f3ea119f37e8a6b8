"""`backtrace render` on a generated corpus of hostile trace files (tests/hostile_traces.py), to
every format at once: a malformed file is one line on stderr and exit code 1, never a traceback,
and leaves no file behind; a well-formed one draws, its SVG and HTML well-formed XML with no
script but the replay's own and no event attribute. Names are escaped for DOT as well as XML."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from backtrace import Trace
from backtrace.cli import cli
from backtrace.render import explorer
from backtrace.render.explorer import PANELS, asset, script_text

from . import hostile_traces
from .pages import Page

CORPUS = hostile_traces.corpus()
FORMATS = ("svg", "png", "pdf", "dot", "html", "json", "txt", "md")
# What some files must say (the rest: exit 0 or one line and exit 1).
EXPECTED = {
    "dup-id.json": "ids must be unique", "missing-input.json": "input 'nope' is no node",
    "cycle.json": "topological order (is there a cycle?)", "self-loop.json": "topological order",
    "output-missing.json": "output 'ghost' is no node", "edge-missing.json": "'ghost' is no node",
    "step-missing.json": "node 'ghost' is no node", "raw-deep-array.json": "is not a trace file",
    "raw-deep-object.json": "nested too deeply", "deep-value.json": "nested more than",
    "raw-huge-int.json": "more than 4,300 digits", "slot-huge.json": "integer too large",
    "value-tensor-mismatch.json": "needs 4 numbers, has 3",
    "value-tensor-dtype.json": "unknown tensor dtype 'float1024'",
    "value-tensor-huge.json": "over the limit", "surrogate-id.json": "lone surrogate",
    "surrogate-module.json": "lone surrogate", "meta-repeat-str.json": "expected an integer",
    "meta-module-int.json": "expected text", "schema-newer.json": "upgrade backtrace",
    "schema-superscript.json": "unknown schema", "raw-latin1.json": "not UTF-8",
    "raw-empty.json": "is not a trace file", "raw-truncated.json": "not JSON",
    "empty-id.json": "id is empty",
    "value-list-bare.json": "an array must hold numbers or arrays of numbers",
}
DRAWN = ("valid.json", "module-superscript.json", "module-nul-entity.json", "id-script.json",
         "index-zero-based.json", "value-tensor-complex.json", "meta-old-dict-form.json",
         "module-digits-unicode.json", "kind-unknown.json", "raw-nan-literals.json")
EVENT = re.compile(r"^on", re.I)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    hostile_traces.write(folder)
    return folder


def test_the_corpus_is_big_and_made_by_a_script():
    assert len(CORPUS) >= 150
    assert all(name in CORPUS for name in [*EXPECTED, *DRAWN])


def check_markup(path: Path) -> None:
    """Well-formed XML (SVG); no script, no on* attribute, no javascript: link."""
    root = ET.fromstring(path.read_bytes())
    assert not [el for el in root.iter() if el.tag.rpartition("}")[2] == "script"], path
    for el in root.iter():
        check_attributes(path, el.attrib.items())


def check_attributes(path: Path, attributes) -> None:
    for name, value in attributes:
        local = name.rpartition("}")[2]
        assert not EVENT.match(local), (path, name)
        if local in ("href", "src", "action") and value:  # titles may say anything; links must not
            assert "javascript:" not in value.lower().replace(" ", ""), (path, name, value)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attributes: list = []

    def handle_starttag(self, tag, attrs):
        self.attributes += attrs


def check_page(path: Path) -> None:
    """The explorer page: its scripts are the trace as JSON data and the page's own code, nothing
    else; no on* attribute or javascript: link anywhere, whatever the trace's names held."""
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    (kind, blob), *code = page.scripts
    assert kind == "application/json" and isinstance(json.loads(blob), dict), path
    ours = {script_text(asset(name)).strip() for name in
            (explorer.LIBRARY, *explorer.BEFORE, *(p.script for p in PANELS.values()),
             *explorer.AFTER)}
    assert all(body.strip() in ours for _, body in code), path
    tags = _Tags()
    tags.feed(text)
    check_attributes(path, tags.attributes)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_render_every_format(name, corpus_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = ["render", str(corpus_dir / name)]
    for fmt in FORMATS:
        args += ["-o", str(out / f"o.{fmt}")]
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{name}: {result.exception!r}"
    assert "Traceback" not in result.output
    errors = result.stderr.strip().splitlines()
    if name in EXPECTED or result.exit_code != 0:
        assert result.exit_code in (1, 2), (name, result.exit_code, errors)
        assert len(errors) == 1 and errors[0].startswith("error: "), (name, errors)
        assert name not in EXPECTED or EXPECTED[name] in errors[0], (name, errors)
        assert list(out.iterdir()) == [], f"{name} left {list(out.iterdir())}"
        assert name not in DRAWN, (name, errors)
        return
    assert sorted(p.name for p in out.iterdir()) == sorted(f"o.{f}" for f in FORMATS)
    check_markup(out / "o.svg")
    check_page(out / "o.html")
    assert (out / "o.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "o.pdf").read_bytes()[:5] == b"%PDF-"
    Trace.from_json((out / "o.json").read_text(encoding="utf-8"))  # what we write reads back


def svg_texts(path: Path) -> list[str]:
    return ["".join(t.itertext()) for t in ET.parse(path).getroot().iter()
            if t.tag.endswith("}text")]


@pytest.mark.parametrize("case, shown", [
    ("module-nul-entity", "&#0;"),  # a cluster label, as typed: not a NUL character
    ("id-dot-escapes", r"name\N\G\E\T\H\L\l\r\n"),  # not expanded to node or graph names
    ("module-dot-escapes", r"name\N\G\E\T\H\L\l\r\n"),
    ("id-script", "<script>alert(1)</script>"), ("module-html-label", "<B>bold</B>"),
    ("id-control", r"bell\x07tab esc\x1b[31m"),  # control characters written out
])
def test_names_are_drawn_as_typed(case, shown, corpus_dir, tmp_path):
    target = tmp_path / "g.svg"
    result = CliRunner().invoke(cli, ["render", str(corpus_dir / f"{case}.json"), "-o", str(target)])
    assert result.exit_code == 0, result.output
    texts = svg_texts(target)
    assert shown in texts or any(shown in t for t in texts), texts


def test_dot_source_escapes_labels(corpus_dir):
    result = CliRunner().invoke(cli, ["render", str(corpus_dir / "module-dot-escapes.json")])
    assert result.exit_code == 0
    assert r'label="name\\N\\G' in result.output  # a plain DOT label: backslashes doubled


def test_size_limit_and_dev_zero(corpus_dir, monkeypatch):
    monkeypatch.setenv("BACKTRACE_MAX_TRACE_MB", "0.001")
    result = CliRunner().invoke(cli, ["render", str(corpus_dir / "chain-3000.json")])
    assert result.exit_code == 1 and "larger than 0.0009765625 MB" not in result.stderr
    assert "the limit for a trace file (BACKTRACE_MAX_TRACE_MB raises it)" in result.stderr
    monkeypatch.delenv("BACKTRACE_MAX_TRACE_MB")
    if Path("/dev/zero").exists():  # refused at its first byte, not read to the limit
        result = CliRunner().invoke(cli, ["render", "/dev/zero"])
        assert result.exit_code == 1 and "/dev/zero is not a trace file" in result.stderr


def test_a_real_process_prints_one_line_and_exits_1(corpus_dir, tmp_path):
    for name in ("cycle.json", "raw-deep-array.json", "surrogate-id.json"):
        done = subprocess.run([sys.executable, "-m", "backtrace", "render", str(corpus_dir / name),
                               "-o", str(tmp_path / "g.svg")], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "g.svg").exists()


def test_old_files_still_read(corpus_dir):
    old = json.loads(CORPUS["valid.json"])
    old["meta"] = {"dict": old["meta"]}  # before meta was plain JSON
    for node in old["nodes"]:
        node["meta"] = {"dict": node["meta"]}
    for k, step in enumerate(old["steps"]):  # before steps were numbered from 1 in files
        step["index"] = k
    t = Trace.from_dict(old)
    assert t.meta == {"level": "stats", "call": 1} and t.node("%0").meta["module"] == "layers.0"
    assert [s.index for s in t.steps] == [0, 1]
    again = json.loads(t.to_json())
    assert again["meta"] == {"level": "stats", "call": 1} and [s["index"] for s in again["steps"]] == [1, 2]
