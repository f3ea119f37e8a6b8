"""Reading a trace file's structure strictly (schema backtrace.trace/1): every field's type, ids
unique, inputs and edges naming nodes that exist, nodes in topological order (no cycles), the
meta that renderers read of the right types, and a size limit; one line saying where a file is
wrong (TraceFormatError). `Trace.from_dict` builds the trace from what `read` returns."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .codec import decode, decode_meta, number, unicode_text
from .errors import TraceFormatError

SCHEMA = "backtrace.trace/1"
MAX_MB = 512  # a trace file larger than this is refused (BACKTRACE_MAX_TRACE_MB changes it)
# Meta keys renderers read, and the types they must have.
NODE_META = {"module": str, "name": str, "torch_type": str, "title": str, "path": str,
             "module_type": str, "note": str, "opaque": str, "members": int, "repeat": int,
             "grad_in": (int, float, type(None)), "grad_out": (int, float, type(None)),
             "instances": tuple, "input_outputs": tuple}
TRACE_META = {"formula": str, "model": str, "level": str, "kind": str, "fold": dict, "layout": dict}


def read_file(path: str | os.PathLike) -> Any:
    """The JSON data of a trace file, refused past the size limit, with one-line errors."""
    limit = int(float(os.environ.get("BACKTRACE_MAX_TRACE_MB", MAX_MB)) * 1024 * 1024)
    try:
        with open(path, "rb") as f:  # read one byte past the limit: /dev/zero has no size
            raw = f.read(min(limit + 1, 1 << 16))
            if not raw.lstrip(b" \t\r\n").startswith(b"{"):  # not a trace: no need to read on
                raise TraceFormatError(f"{path} is not a trace file (one is a JSON object, "
                                       "starting with {)")
            raw += f.read(limit + 1 - len(raw))
    except OSError as exc:
        raise TraceFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise TraceFormatError(f"{path} is larger than {limit / 2**20:g} MB, the limit for a trace "
                               "file (BACKTRACE_MAX_TRACE_MB raises it)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(f"cannot read {path}: not UTF-8 text (byte {exc.start})") from None
    return parse_json(text)


def parse_json(text: str) -> Any:
    """JSON text to data; malformed, too deep or too large numbers as one line."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TraceFormatError("not JSON a trace can be: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers of over 4,300 digits
        if "integer string conversion" in str(exc):
            raise TraceFormatError("not JSON a trace can be: a number with more than 4,300 "
                                   "digits") from None
        raise TraceFormatError(f"not JSON: {exc}") from None


def read(data: Any) -> dict:
    """The checked content of a trace file's data (see the module's docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
        raise TraceFormatError("not a backtrace trace: no 'schema' key")
    name, _, version = data["schema"].partition("/")
    if name != "backtrace.trace" or not (version.isascii() and version.isdigit()):
        raise TraceFormatError(f"unknown schema {data['schema'][:60]!r}")
    if int(version) > int(SCHEMA.rsplit("/", 1)[1]):
        raise TraceFormatError(f"trace schema {data['schema']} is newer than this backtrace "
                               f"reads ({SCHEMA}); upgrade backtrace")
    try:
        return _content(data)
    except TraceFormatError as exc:
        raise TraceFormatError(f"malformed trace: {exc}") from None


def _content(data: dict) -> dict:
    nodes_data, steps_data = _list(data, "nodes", "top level"), _list(data, "steps", "top level")
    position = {}
    for k, n in enumerate(nodes_data):
        node_id = _text(_obj(n, f"nodes[{k}]"), "id", f"nodes[{k}]")
        if not node_id:
            raise TraceFormatError(f"nodes[{k}]: id is empty")
        if node_id in position:
            raise TraceFormatError(f"nodes[{k}]: id {node_id!r} is also the id of "
                                   f"nodes[{position[node_id]}]; ids must be unique")
        position[node_id] = k
    nodes = [_node(n, k, position) for k, n in enumerate(nodes_data)]
    output = _text(data, "output", "top level")
    if output not in position:
        raise TraceFormatError(f"output {output!r} is no node")
    base = 0 if steps_data and isinstance(steps_data[0], dict) and steps_data[0].get("index") == 0 \
        else 1  # files before steps were numbered from 1 in JSON too
    steps = [_step(s, k, position, base) for k, s in enumerate(steps_data)]
    meta = _meta(data.get("meta", {}), "meta", TRACE_META)
    return {"engine": _text(data, "engine", "top level"), "output": output, "nodes": nodes,
            "steps": steps, "meta": meta}


def _node(n: dict, k: int, position: dict[str, int]) -> tuple:
    where = f"nodes[{k}]"
    node_id = n["id"]
    inputs = _list(n, "inputs", where)
    for slot, i in enumerate(inputs):
        if not isinstance(i, str):
            raise TraceFormatError(f"{where}.inputs[{slot}]: expected a node id, got {i!r:.40}")
        if i not in position:
            raise TraceFormatError(f"{where} ({node_id}): input {i!r} is no node")
        if position[i] >= k:
            raise TraceFormatError(f"{where} ({node_id}): input {i!r} comes at or after it; nodes "
                                   "must be in topological order (is there a cycle?)")
    return (node_id, _text(n, "op", where), tuple(inputs), _text(n, "expr", where, ""),
            decode(n.get("value"), f"{where}.value"), decode(n.get("grad"), f"{where}.grad"),
            _text(n, "kind", where, "op"), _meta(n.get("meta", {}), f"{where}.meta", NODE_META))


def _step(s: Any, k: int, position: dict[str, int], base: int) -> tuple:
    where = f"steps[{k}]"
    _obj(s, where)
    node = _text(s, "node", where)
    if node not in position:
        raise TraceFormatError(f"{where}: node {node!r} is no node")
    index = _int(s, "index", where) - base
    edges = []
    for j, e in enumerate(_list(s, "edges", where)):
        at = f"{where}.edges[{j}]"
        _obj(e, at)
        target = _text(e, "input", at)
        if target not in position:
            raise TraceFormatError(f"{at}: input {target!r} is no node")
        edges.append((_int(e, "slot", at), target, decode(e.get("local"), f"{at}.local"),
                      _text(e, "rule", at, ""), decode(e.get("contribution"), f"{at}.contribution"),
                      _text(e, "note", at, "")))
    return (index, node, decode(s.get("upstream"), f"{where}.upstream"), tuple(edges),
            _meta(s.get("meta", {}), f"{where}.meta", {}))


def _meta(d: Any, where: str, types: dict) -> dict:
    meta = decode_meta(d, where)
    for key, kind in types.items():
        if key in meta and not (isinstance(meta[key], kind) and not isinstance(meta[key], bool)):
            raise TraceFormatError(f"{where}.{key}: expected {_name(kind)}, got {meta[key]!r:.40}")
    _strings(meta, where)
    return meta


def _name(kind: Any) -> str:
    names = {str: "text", int: "an integer", dict: "an object", tuple: "a list"}
    return names.get(kind, "a number or null")


def _strings(v: Any, where: str) -> None:
    """Every string inside a value is valid Unicode (no lone surrogate, as '\\ud800' reads)."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            unicode_text(x, where)
        elif isinstance(x, dict):
            stack += [*x.keys(), *x.values()]
        elif isinstance(x, (tuple, list)):
            stack += list(x)


def _obj(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise TraceFormatError(f"{where}: expected an object, got {v!r:.40}")
    return v


def _list(d: dict, key: str, where: str) -> list:
    if key not in d:
        raise TraceFormatError(f"{where}: no {key!r}")
    if not isinstance(d[key], list):
        raise TraceFormatError(f"{where}.{key}: expected a list, got {d[key]!r:.40}")
    return d[key]


_MISSING = object()


def _text(d: dict, key: str, where: str, default: Any = _MISSING) -> str:
    v = d.get(key, default)
    if v is _MISSING:
        raise TraceFormatError(f"{where}: no {key!r}")
    if not isinstance(v, str):
        raise TraceFormatError(f"{where}.{key}: expected text, got {v!r:.40}")
    return unicode_text(v, f"{where}.{key}")


def _int(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TraceFormatError(f"{where}.{key}: expected an integer, got {v!r:.40}")
    number(v, f"{where}.{key}")
    if v < 0:
        raise TraceFormatError(f"{where}.{key}: must not be negative, got {v}")
    return v


def read_path(path: str | os.PathLike) -> dict:
    """`read` of a file."""
    return read(read_file(Path(path)))
