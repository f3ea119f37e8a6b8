"""Golden traces: `assert_trace_matches` compares a Trace with a JSON file, structure exactly and
numbers within tolerance, and names the first difference the way a reader would look for it."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import TraceFormatError
from ..traces import Trace
from ..values import format_number
from .settings import current_settings


def assert_trace_matches(trace: Trace, path: str | os.PathLike, rtol: float = 1e-6,
                         atol: float = 1e-9) -> None:
    """Compare `trace` with the golden JSON at `path`: structure exact, numbers within tolerance.

    With ``pytest --backtrace-update`` (or BACKTRACE_UPDATE=1, or inside
    ``configure(update_goldens=True)``) the golden is (re)written instead."""
    from ..files import write_atomic

    target = Path(path)
    if current_settings().update_goldens or os.environ.get("BACKTRACE_UPDATE") == "1":
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, trace.to_json() + "\n")
        return
    if not target.exists():
        raise AssertionError(f"no golden trace at {target}: run pytest --backtrace-update to create it")
    try:
        golden = json.loads(target.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceFormatError(f"golden trace {target} is not JSON: {exc}") from None
    Trace.from_dict(golden)  # a clear error for a malformed or newer-schema golden
    actual = json.loads(trace.to_json())
    problem = _diff_traces(actual, golden, rtol, atol)
    if problem is not None:
        where, message = problem
        raise AssertionError(f"trace differs from golden {target} at {_where(where, golden)}: "
                             f"{message} (rtol={rtol:g}, atol={atol:g}); "
                             f"rerun with pytest --backtrace-update if the change is intended")


def _diff_traces(a: dict, b: dict, rtol: float, atol: float) -> tuple[str, str] | None:
    """Compare two trace dicts in the order a reader would look: structure, forward values in
    topological order, backward steps in execution order, then gradients and the rest."""
    numbers = ("value", "grad", "meta")
    later = ("nodes", "steps", "value", "grads", "meta")
    parts: list[tuple[str, Any, Any]] = [("", _without(a, later), _without(b, later))]
    for key in ("nodes", "steps"):
        if len(a[key]) != len(b[key]):
            return f"/{key}", f"{len(a[key])} {key}, golden has {len(b[key])}"
    parts += [(f"/nodes/{i}", _without(x, numbers), _without(y, numbers))
              for i, (x, y) in enumerate(zip(a["nodes"], b["nodes"]))]
    parts += [(f"/steps/{i}", _step_shape(x), _step_shape(y))
              for i, (x, y) in enumerate(zip(a["steps"], b["steps"]))]
    parts += [(f"/nodes/{i}/value", x.get("value"), y.get("value"))
              for i, (x, y) in enumerate(zip(a["nodes"], b["nodes"]))]
    parts += [(f"/steps/{i}", x, y) for i, (x, y) in enumerate(zip(a["steps"], b["steps"]))]
    parts += [(f"/nodes/{i}", x, y) for i, (x, y) in reversed(list(enumerate(zip(a["nodes"],
                                                                                 b["nodes"]))))]
    parts += [(f"/{k}", a.get(k), b.get(k)) for k in ("value", "grads", "meta")]
    for where, x, y in parts:
        found = _diff(x, y, where, rtol, atol)
        if found:
            return found
    return None


def _without(d: Any, keys: tuple[str, ...]) -> Any:
    return {k: v for k, v in d.items() if k not in keys} if isinstance(d, dict) else d


def _step_shape(step: Any) -> Any:
    """A step without its numbers: which node, which edges, which rules."""
    if not isinstance(step, dict):
        return step
    edges = [_without(e, ("local", "contribution")) for e in step.get("edges", [])]
    return {**_without(step, ("upstream", "meta", "edges")), "edges": edges}


def _diff(a: Any, b: Any, where: str, rtol: float, atol: float) -> tuple[str, str] | None:
    """The first place where a (actual) and b (golden) differ: path and message, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            extra, missing = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            return where, f"keys differ (new: {extra}, missing: {missing})"
        for k in a:
            found = _diff(a[k], b[k], f"{where}/{k}", rtol, atol)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return where, f"{len(a)} items, golden has {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _diff(x, y, f"{where}/{i}", rtol, atol)
            if found:
                return found
        return None
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        if isinstance(a, int) and isinstance(b, int):
            same = a == b
        else:
            from ..compare import close

            same = close(float(a), float(b), rtol, atol)
        return None if same else (where, f"{format_number(a)} != golden {format_number(b)}")
    if a != b or type(a) is not type(b):
        return where, f"{a!r} != golden {b!r}"
    return None


def _where(path: str, golden: dict) -> str:
    """'/steps/0/edges/1/local' as 'step 1 (node f), input slot 1 (z), local'."""
    parts = [p for p in path.strip("/").split("/") if p not in ("dict", "list", "")]
    label = ""
    if len(parts) >= 2 and parts[0] in ("nodes", "steps") and parts[1].isdigit():
        entry = golden[parts[0]][int(parts[1])]
        if parts[0] == "nodes":
            label = f"node {entry.get('id')}"
        else:
            label = f"step {int(parts[1]) + 1} (node {entry.get('node')})"
        parts = parts[2:]
        if len(parts) >= 2 and parts[0] == "edges" and parts[1].isdigit():
            edge = entry["edges"][int(parts[1])]
            label += f", input slot {edge.get('slot')} ({edge.get('input')})"
            parts = parts[2:]
    elif parts and parts[0] in ("nodes", "steps"):
        return f"the list of {parts[0]}"
    rest = "/".join(parts)
    return ", ".join(x for x in (label, rest) if x) or "the top level"
