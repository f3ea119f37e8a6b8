"""Output safety: names that try to inject markup or DOT syntax come out escaped in DOT, SVG, HTML
and JSON; files are written whole or not at all; unwritable paths give one-line errors."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from backtrace import Trace
from backtrace.errors import BacktraceError
from backtrace.render.formats import export
from backtrace.files import write_atomic
from backtrace.traces import Edge, Step, TraceNode

EVIL = ['<script>alert(1)</script>', 'a"b\'c&d', 'x\ny\r\nz', '"];\ninjected [label="boom"];\n//',
        '</text><image href="http://example.invalid/x.png"/>', '}"digraph{', '<b>bold</b>',
        '{<f0>|<f1>}', '\\N\\G\\E', '&lt;already&gt;']


def evil_trace() -> Trace:
    """A trace whose every name, expression and rule is hostile text."""
    ids = [f"{e}#{i}" for i, e in enumerate(EVIL)]
    nodes = [TraceNode(ids[0], "input", (), EVIL[1], 1.0, 2.0, "input", {"module": EVIL[4]})]
    steps = []
    for k in range(1, len(ids)):
        nodes.append(TraceNode(ids[k], "mul", (ids[k - 1], ids[0]), EVIL[k], 1.0, 1.0, "op",
                               {"module": EVIL[k], "name": EVIL[-k]}))
    for k in range(len(ids) - 1, 0, -1):
        steps.append(Step(len(steps), ids[k], 1.0,
                          (Edge(0, ids[k - 1], 1.0, EVIL[k], 1.0, EVIL[-k]),
                           Edge(1, ids[0], 1.0, EVIL[k - 1], 1.0, ""))))
    return Trace("reference", ids[-1], tuple(nodes), tuple(steps), {"formula": EVIL[0]})


FORBIDDEN_TAGS = {"script", "image", "b", "iframe", "foreignObject", "use"}
HREF = ("href", "{http://www.w3.org/1999/xlink}href")


def tags(svg_root) -> set[str]:
    return {el.tag.rsplit("}", 1)[-1] for el in svg_root.iter()}


def test_svg_parses_and_contains_no_injected_element(tmp_path):
    path = export(evil_trace(), tmp_path / "evil.svg")
    root = ET.fromstring(path.read_bytes())  # raises on malformed XML
    assert not tags(root) & FORBIDDEN_TAGS
    assert not [el.attrib for el in root.iter() if any(h in el.attrib for h in HREF)]
    text = "".join(root.itertext())
    assert "<script>alert(1)</script>" in text  # shown as text, not run as markup


def test_dot_syntax_in_names_creates_no_nodes(tmp_path):
    """Names full of DOT syntax ("]; injected [...") stay inside quoted strings: Graphviz draws
    exactly the trace's nodes, and the hostile text shows up only as text."""
    t = evil_trace()
    export(t, tmp_path / "evil.dot")
    root = ET.fromstring(export(t, tmp_path / "evil.svg").read_bytes())
    ns = "{http://www.w3.org/2000/svg}"
    titles = [g.find(f"{ns}title").text for g in root.iter(f"{ns}g") if g.get("class") == "node"]
    assert len(titles) == len(t.nodes) and all(t.startswith("n") for t in titles), titles
    assert "injected" not in titles


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self._in_script = tag == "script"
        for name, value in attrs:
            assert not name.startswith("on") or tag == "body", f"event handler {name} on {tag}"
            if not name.startswith("xmlns"):  # namespace names are not fetched
                assert not (value or "").startswith(("http:", "https:", "//")), f"external {value}"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def test_html_explorer_has_no_injected_markup(tmp_path):
    page = export(evil_trace(), tmp_path / "evil.html").read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(page)
    assert "b" not in parser.tags and "image" not in parser.tags and "iframe" not in parser.tags
    # The page's own scripts: the trace as JSON (data, never run), then the inlined code.
    assert parser.tags.count("script") == len(parser.scripts) and len(parser.scripts) > 2
    assert json.loads(parser.scripts[0])["title"] == EVIL[0]  # the hostile text, as data
    assert not any("alert(1)" in code for code in parser.scripts[1:])


def test_json_escapes_and_round_trips(tmp_path):
    t = evil_trace()
    path = export(t, tmp_path / "evil.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["meta"] == {"formula": EVIL[0]}  # meta is plain JSON
    assert Trace.from_json(path.read_text(encoding="utf-8")) == t


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old content")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BacktraceError, match="cannot write .*No space left on device"):
        write_atomic(target, "new content")
    assert target.read_text() == "old content"  # untouched, not truncated
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_unwritable_path_is_one_line_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(BacktraceError, match="cannot write"):
            write_atomic(locked / "t.json", "x")
    finally:
        locked.chmod(0o700)
    with pytest.raises(BacktraceError, match="cannot write"):
        write_atomic(Path("/nonexistent-dir/t.json"), "x")


def test_new_files_get_the_umask_mode_and_old_files_keep_theirs(tmp_path):
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json"
        write_atomic(fresh, "{}")
        assert fresh.stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("x")
        kept.chmod(0o600)
        write_atomic(kept, "{}")
        assert kept.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
