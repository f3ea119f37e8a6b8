"""A corpus of hostile trace files for `backtrace render`: broken JSON, wrong types in every field,
impossible graphs (missing nodes, colliding ids, cycles), values that lie about their shape, and
names made to break SVG, HTML and DOT (`&#0;`, `\\N`, `<script>`, event attributes, lone
surrogates, superscript digits). Some are well-formed and must draw; the rest must be refused
with one line.

    python tests/hostile_traces.py DIR      # writes the files into DIR
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

STATS = {"stats": {"shape": [2, 3], "dtype": "float32", "norm": 1.5, "mean": 0.1, "absmax": 0.9}}


def base() -> dict:
    """A small valid torch-shaped trace: x -> fc (module "layers.0") -> loss, with statistics."""
    return {
        "schema": "backtrace.trace/1", "engine": "torch", "output": "loss",
        "value": 1.0, "grads": {}, "meta": {"level": "stats", "call": 1},
        "nodes": [
            {"id": "x", "op": "input", "kind": "input", "inputs": [], "expr": "input",
             "value": STATS, "grad": STATS, "meta": {"module": "", "name": "x"}},
            {"id": "layers.0.weight", "op": "input", "kind": "input", "inputs": [],
             "expr": "input", "value": STATS, "grad": STATS,
             "meta": {"module": "layers.0", "name": "layers.0.weight", "torch_type": "AccumulateGrad"}},
            {"id": "%0", "op": "mm", "kind": "op", "inputs": ["x", "layers.0.weight"],
             "expr": "mm(x, layers.0.weight)", "value": STATS, "grad": STATS,
             "meta": {"module": "layers.0", "name": "", "torch_type": "MmBackward0"}},
            {"id": "loss", "op": "sum", "kind": "op", "inputs": ["%0"], "expr": "sum(%0)",
             "value": 2.5, "grad": 1.0, "meta": {"module": "", "name": "loss",
                                                "torch_type": "SumBackward0"}},
        ],
        "steps": [
            {"index": 1, "node": "loss", "upstream": 1.0, "meta": {}, "edges": [
                {"slot": 0, "input": "%0", "local": None, "rule": "Jacobian 1×6 (not computed)",
                 "contribution": STATS, "note": ""}]},
            {"index": 2, "node": "%0", "upstream": STATS, "meta": {}, "edges": [
                {"slot": 0, "input": "x", "local": None, "rule": "", "contribution": STATS,
                 "note": ""},
                {"slot": 1, "input": "layers.0.weight", "local": None, "rule": "",
                 "contribution": STATS, "note": ""}]},
        ],
    }


# Text made to break the formats a trace is drawn in.
HOSTILE_TEXT = {
    "nul-entity": "layers.&#0;", "amp-entities": "a&amp;b&lt;c&#x1F600;&bogus;",
    "dot-escapes": r"name\N\G\E\T\H\L\l\r\n", "backslash-quote": 'tail\\" ] ; n9 [label="x',
    "script": "<script>alert(1)</script>", "event": '" onload="alert(1)', "cdata": "]]><x/>",
    "html-label": "<B>bold</B>", "svg-tag": "</text><script>alert(2)</script><text>",
    "newlines": "line1\nline2\r\nline3", "control": "bell\x07tab\tesc\x1b[31m", "nul": "a\x00b",
    "rtl": "abc\u202edcba", "emoji": "🤖∂‖×·", "long": "m" * 3000,
    "superscript": "layers.²", "digits-unicode": "layers.٣", "braces": "{a|b}<c>",
    "comment": "/* -- */ // #", "percent": "%0 %% %s %n", "javascript-url": "javascript:alert(1)",
}


def _set(data: dict, path: tuple, value: Any) -> dict:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _delete(data: dict, path: tuple) -> dict:
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


def paths(d: Any, prefix: tuple = ()):
    """Every path to a value inside nested dicts and lists, as a tuple of keys and indices."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


def corpus() -> dict[str, bytes]:
    """File name -> content."""
    good = base()
    files: dict[str, bytes] = {"valid.json": json.dumps(good).encode()}
    raw = {"empty": b"", "null": b"null", "list": b"[]", "number": b"42", "truncated":
           json.dumps(good).encode()[:300], "bom": b"\xef\xbb\xbf" + json.dumps(good).encode(),
           "latin1": json.dumps(good).replace("input", "\u00e9").encode("latin-1"),
           "nul-bytes": b"\x00" * 100, "binary": bytes(range(256)) * 4,
           "deep-array": b"[" * 100_000 + b"]" * 100_000,
           "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
           "huge-int": json.dumps({**good, "value": 1}).replace('"value": 1', '"value": ' + "9" * 5000).encode(),
           "nan-literals": json.dumps(good).replace("1.5", "NaN").replace("0.9", "Infinity").encode(),
           "duplicate-keys": b'{"schema": "backtrace.trace/1", "schema": "backtrace.trace/9"}'}
    files.update({f"raw-{k}.json": v for k, v in raw.items()})
    deep = '{"list": [' * 100 + "1" + "]}" * 100  # values nested deeper than a trace may nest them
    files["deep-value.json"] = json.dumps(_set(good, ("nodes", 0, "value"), "DEEP")).replace(
        '"DEEP"', deep).encode()
    junk = {"null": None, "int": 7, "neg": -1, "float": 2.5, "str": "text", "list": [1, "a"],
            "obj": {}, "bool": True, "bigint": 10 ** 30}
    def structural(p: tuple) -> bool:  # every field of one node, one step and one edge
        if p[0] == "nodes":
            return len(p) <= 2 or (len(p) == 3 and p[1] == 2) or (p[1] == 2 and len(p) == 4 and p[2] == "meta")
        if p[0] == "steps":
            return len(p) == 1 or (len(p) <= 3 and p[1] == 1) or (len(p) == 5 and p[1:4] == (1, "edges", 0))
        return len(p) == 1
    for path in filter(structural, paths(good)):
        if path[0] == "nodes" and len(path) > 2 and path[1] != 2:
            continue
        name = "-".join(map(str, path))
        files[f"del-{name}.json"] = json.dumps(_delete(good, path)).encode()
        for jname in ("null", "int", "str", "list", "obj", "bigint") if len(path) <= 3 else ("null", "int"):
            files[f"type-{name}-{jname}.json"] = json.dumps(_set(good, path, junk[jname])).encode()
    graphs = {
        "dup-id": _set(good, ("nodes", 2, "id"), "x"),
        "empty-id": _set(good, ("nodes", 0, "id"), ""),
        "missing-input": _set(good, ("nodes", 2, "inputs"), ["x", "nope"]),
        "cycle": _set(_set(good, ("nodes", 0, "inputs"), ["%0"]), ("nodes", 0, "kind"), "op"),
        "self-loop": _set(good, ("nodes", 2, "inputs"), ["%0"]),
        "output-missing": _set(good, ("output",), "ghost"),
        "edge-missing": _set(good, ("steps", 1, "edges", 0, "input"), "ghost"),
        "step-missing": _set(good, ("steps", 0, "node"), "ghost"),
        "slot-negative": _set(good, ("steps", 1, "edges", 0, "slot"), -3),
        "slot-huge": _set(good, ("steps", 1, "edges", 0, "slot"), 10 ** 19),
        "index-zero-based": _set(_set(good, ("steps", 0, "index"), 0), ("steps", 1, "index"), 1),
        "no-nodes": {**good, "nodes": [], "steps": []},
        "kind-unknown": _set(good, ("nodes", 2, "kind"), "wizard"),
        "schema-newer": {**good, "schema": "backtrace.trace/2"},
        "schema-superscript": {**good, "schema": "backtrace.trace/¹"},
        "schema-other": {**good, "schema": "torchviz/1"},
    }
    values = {
        "tag-unknown": {"bogus": 1}, "tag-two": {"float": "nan", "text": "x"},
        "float-bad": {"float": "huge"}, "stats-missing": {"stats": {"shape": [2]}},
        "stats-shape-neg": {"stats": {**STATS["stats"], "shape": [-1]}},
        "stats-shape-str": {"stats": {**STATS["stats"], "shape": "2x3"}},
        "stats-norm-str": {"stats": {**STATS["stats"], "norm": "big"}},
        "stats-dtype-int": {"stats": {**STATS["stats"], "dtype": 5}},
        "tensor-mismatch": {"tensor": {"dtype": "float32", "shape": [2, 2], "data": [1, 2, 3]}},
        "tensor-dtype": {"tensor": {"dtype": "float1024", "shape": [1], "data": [1]}},
        "tensor-huge": {"tensor": {"dtype": "float32", "shape": [100000, 100000], "data": [1]}},
        "tensor-strings": {"tensor": {"dtype": "float32", "shape": [2], "data": ["a", "b"]}},
        "tensor-complex": {"tensor": {"dtype": "complex64", "shape": [2], "data": [1, 2],
                                      "imag": [0.5, -0.5]}},
        "complex-bad": {"complex": [1]}, "list-bare": ["a", 2], "text-int": {"text": 5},
        "list-tag-obj": {"list": {"a": 1}}, "dict-tag-list": {"dict": [1]},
    }
    for name, v in values.items():
        graphs[f"value-{name}"] = _set(good, ("nodes", 2, "value"), v)
        graphs[f"grad-{name}"] = _set(good, ("nodes", 3, "grad"), v)
        graphs[f"local-{name}"] = _set(good, ("steps", 1, "edges", 0, "local"), v)
    meta = {"module-int": ("module", 3), "name-list": ("name", ["a"]),
            "torch-type-obj": ("torch_type", {"a": 1}), "repeat-str": ("repeat", "many"),
            "members-float": ("members", 2.5), "instances-int": ("instances", 5),
            "input-outputs-str": ("input_outputs", "0,1"), "title-null": ("title", None)}
    for name, (key, v) in meta.items():
        graphs[f"meta-{name}"] = _set(good, ("nodes", 2, "meta", key), v)
    graphs["meta-fold-str"] = _set(good, ("meta", "fold"), "folded")
    graphs["meta-old-dict-form"] = _set(good, ("meta",), {"dict": {"level": "stats"}})
    for name, text in HOSTILE_TEXT.items():
        graphs[f"module-{name}"] = _set(_set(good, ("nodes", 2, "meta", "module"), text),
                                        ("nodes", 1, "meta", "module"), text)
        graphs[f"id-{name}"] = _set(_set(good, ("nodes", 2, "id"), text),
                                    ("steps", 1, "node"), text)
        graphs[f"id-{name}"]["nodes"][3]["inputs"] = [text]
        graphs[f"id-{name}"]["steps"][0]["edges"][0]["input"] = text
        graphs[f"expr-{name}"] = _set(_set(good, ("nodes", 2, "expr"), text),
                                      ("nodes", 2, "op"), text)
        graphs[f"meta-text-{name}"] = _set(_set(good, ("meta", "formula"), text),
                                           ("steps", 1, "edges", 0, "note"), text)
        graphs[f"rule-{name}"] = _set(good, ("steps", 1, "edges", 0, "rule"), text)
    graphs["surrogate-id"] = None  # written by hand below: json.dumps cannot
    for name, data in graphs.items():
        if data is not None:
            files[f"{name}.json"] = json.dumps(data, ensure_ascii=False).encode("utf-8",
                                                                               "surrogatepass")
    files["surrogate-id.json"] = json.dumps(good).replace('"%0"', '"\\ud800"').encode()
    files["surrogate-module.json"] = json.dumps(good).replace('"layers.0"', '"\\udfff x"').encode()
    chain = copy.deepcopy(good)
    chain["nodes"] = [{"id": f"n{k}", "op": "add", "kind": "op", "inputs": [f"n{k - 1}"] if k else [],
                       "expr": "", "value": 1.0, "grad": 1.0, "meta": {}} for k in range(3000)]
    chain["output"], chain["steps"] = "n2999", []
    files["chain-3000.json"] = json.dumps(chain).encode()
    return files


def write(folder: str | Path) -> list[Path]:
    """Write the corpus into `folder`; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in corpus().items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    written = write(sys.argv[1] if len(sys.argv) > 1 else "hostile-traces")
    print(f"{len(written)} files")
