"""The first non-finite value of a traced backward pass, explained: which node made it (the first,
in backward order, whose upstream gradient was finite but whose contribution is not), why in
words from upstream × local, the first non-finite forward value, and what usually fixes it.

`Trace.nonfinite()` is the front door; this module reads a Trace by its fields only (no import of
backtrace.traces, which calls it), so it works on traces loaded from JSON too.
"""
from __future__ import annotations

import linecache
import textwrap
from dataclasses import dataclass, field
from typing import Any

from .values import describe, has_nan, nonfinite

# Ops whose local derivative is infinite or undefined somewhere on finite inputs.
_SINGULAR = {"sqrt", "rsqrt", "log", "log2", "log10", "log1p", "div", "true_divide", "reciprocal",
             "pow", "acos", "asin", "atanh", "norm", "linalg_vector_norm", "vector_norm", "tan",
             "cdist", "pdist", "sqrt_", "log_", "div_", "pow_", "rsub", "divide", "xlogy"}
_DIVISIONS = {"div", "true_divide", "reciprocal", "rsqrt", "divide", "div_"}
_NORMS = {"norm", "linalg_vector_norm", "vector_norm", "linalg_norm"}
_MASKS = {"where", "masked_fill", "masked_fill_", "where_"}
_MAX = {"float16": 65504.0, "bfloat16": 3.3895e38, "float32": 3.4028e38, "float64": 1.7977e308}


@dataclass(frozen=True)
class Culprit:
    """A node where a non-finite value appears: in `backward` (a contribution from a finite
    upstream gradient) or in `forward` (a value from finite inputs)."""

    node: str
    op: str
    module: str
    source: str  # path:line of the user's code that made the node ("" when unknown)
    where: str  # "backward" or "forward"
    cause: str  # "0 × inf", "finite × inf", "inf − inf", "overflow", "NaN upstream", ...
    words: str  # the cause in a sentence
    fix: str  # what usually cures it ("" when nothing is known)
    torch_type: str = ""
    shapes: tuple = ()
    dtypes: tuple = ()
    value: Any = None  # the node's forward value
    upstream: Any = None  # backward: the gradient it received
    input: str = ""  # backward: the input its non-finite contribution went to
    slot: int = -1
    local: Any = None  # backward: the local derivative (or its description)
    contribution: Any = None


@dataclass(frozen=True)
class NonFinite:
    """The report of `Trace.nonfinite()`: the culprit, the first non-finite forward value (its
    origin, when the forward made it), and the nodes that only passed it on."""

    culprit: Culprit
    first_forward: Culprit | None
    propagators: tuple[str, ...]
    call: Any = None  # the backward call's number, from the trace's meta
    labels: dict = field(default_factory=dict, compare=False)  # node id -> "op" or "op (name)"

    def __str__(self) -> str:
        return "\n".join(lines(self))


def explain(trace: Any) -> NonFinite | None:
    """The report for a trace, or None when every gradient and the output value are finite
    (non-finite forward values that do not reach the output, such as a -inf attention mask,
    are intended and not reported)."""
    nodes = {n.id: n for n in trace.nodes}
    steps = list(trace.steps)
    found, propagators = None, []
    for step in steps:
        bad = [e for e in step.edges if nonfinite(e.contribution)]
        if not bad:
            continue
        if nonfinite(step.upstream):
            propagators.append(step.node)
        elif found is None:
            found = (step, bad[0])
    leaf_bad = any(nonfinite(n.grad) for n in trace.nodes if n.kind == "input")
    seed_bad = bool(steps) and nonfinite(steps[0].upstream) > 0
    output = nodes.get(trace.output)
    output_bad = output is not None and nonfinite(output.value) > 0
    if found is None and not (seed_bad or leaf_bad or output_bad or propagators):
        return None
    target = found[0].node if found is not None else trace.output
    origin = _forward_origin(nodes, target)
    if found is not None:
        culprit = _backward(nodes, trace, *found, origin)
    elif seed_bad:
        culprit = _seed(nodes, steps[0])
    elif origin is not None:
        culprit = origin
    else:  # non-finite only where nothing else was recorded
        culprit = _seed(nodes, steps[0]) if steps else _forward(nodes, nodes[trace.output])
    passed = tuple(p for p in propagators if p != culprit.node)
    mentioned = {culprit.node, culprit.input, *passed, *([origin.node] if origin else [])}
    labels = {i: _label(nodes[i]) for i in mentioned if i in nodes}
    return NonFinite(culprit, origin, passed, trace.meta.get("call"), labels)


def _label(node: Any) -> str:
    """How the text names a node: its op, and the user's name for it if there is one."""
    name = node.meta.get("name") or ""
    if node.kind == "input":
        return "input" if node.id == name or not name else f"input {name}"
    return f"{node.op} {name}" if name and name != node.id else node.op


# -- the backward culprit
def _backward(nodes: dict, trace: Any, step: Any, edge: Any, origin: Culprit | None) -> Culprit:
    """The culprit step: finite upstream, a non-finite contribution (edge)."""
    node = nodes[step.node]
    cause, words, fix = _why_backward(nodes, trace, node, step, edge, origin)
    return _culprit(node, "backward", cause, words, fix, upstream=step.upstream, input=edge.input,
                    slot=edge.slot, local=edge.local if edge.local is not None else edge.rule,
                    contribution=edge.contribution)


def _why_backward(nodes: dict, trace: Any, node: Any, step: Any, edge: Any,
                  origin: Culprit | None) -> tuple[str, str, str]:
    """(cause, words, fix) for a non-finite contribution from a finite upstream gradient."""
    op, c = node.op, edge.contribution
    inputs = [nodes[i] for i in node.inputs if i in nodes]
    if any(nonfinite(x.value) for x in inputs):
        where = f" (they start at {origin.node}, {origin.op}: {origin.cause})" if origin else ""
        return ("non-finite forward value",
                f"the forward values {op} computed with are already inf or NaN{where}; the "
                "gradient only shows it", origin.fix if origin else "")
    if node.meta.get("opaque") == "custom autograd.Function":
        what = "NaN" if has_nan(c) else "inf"
        return (f"finite × {what}", f"the backward of the custom autograd.Function {op} "
                f"returned {what} for a finite upstream gradient",
                f"check {op}'s backward: backtrace.testing.check_function({op}, ...)")
    singular = _singular_words(op)
    masked = _masked(trace, node)
    if masked:
        local = "NaN" if has_nan(node.value) else "inf"
        return (f"0 × {local}", f"the upstream gradient is 0 where {op}'s local derivative is "
                f"{local} ({singular}): a masked branch of {masked}; 0 × {local} = NaN",
                _fix(nodes, node, masked))
    if has_nan(node.value):  # the forward made NaN here, and the derivative is NaN there too
        cause = "0/0" if op in _DIVISIONS else "finite × NaN"
        return (cause, f"{op} is NaN in the forward ({singular}), and so is its local "
                "derivative: upstream × NaN = NaN", _fix(nodes, node, None))
    dtype = _dtype(node)
    if not has_nan(c):
        if dtype in ("float16", "bfloat16") and (op not in _SINGULAR or _large(step, node,
                                                                                inputs, dtype)):
            return ("overflow", f"upstream × local exceeds {dtype}'s maximum "
                    f"({_MAX[dtype]:g}) in {op}'s backward", _OVERFLOW_FIX)
        return ("finite × inf", f"{op}'s local derivative is inf ({singular}): a finite "
                "upstream gradient × inf = inf", _fix(nodes, node, None))
    if op in _NORMS:
        return ("0/0", f"the local derivative of {op}, x/‖x‖, is 0/0 at a zero vector",
                _fix(nodes, node, None))
    return ("0 × inf", f"{op}'s local derivative is inf ({singular}) where the upstream "
            "gradient is 0: 0 × inf = NaN", _fix(nodes, node, None))


def _large(step: Any, node: Any, inputs: list, dtype: str) -> bool:
    """Whether upstream × local plausibly overflows dtype at finite points: |upstream| times the
    derivative's scale |value| / |input| (p·x^(p-1) for a power) is near the dtype's maximum."""
    def top(v: Any) -> float:
        return float(getattr(v, "absmax", 0.0) or 0.0) if not isinstance(v, float) else abs(v)

    scale = top(node.value) / max([top(x.value) for x in inputs] + [1e-30])
    return top(step.upstream) * scale >= _MAX[dtype] / 16


def _masked(trace: Any, node: Any) -> str:
    """The masking op (where, masked_fill) that consumes node's output, if one does."""
    for n in trace.nodes:
        if node.id in n.inputs and (n.op in _MASKS or "Where" in n.meta.get("torch_type", "")):
            return "torch.where" if n.op.startswith("where") or "Where" in \
                n.meta.get("torch_type", "") else n.op
    return ""


def _seed(nodes: dict, step: Any) -> Culprit:
    """The gradient handed to backward() is already non-finite."""
    node = nodes[step.node]
    return _culprit(node, "backward", "NaN upstream", "the gradient passed to backward() (or "
                    "torch.autograd.grad) is already inf or NaN",
                    "check the gradient given to backward()", upstream=step.upstream)


# -- the forward origin
def _forward_origin(nodes: dict, target: str) -> Culprit | None:
    """The first non-finite forward value among target's ancestors (itself included) whose
    recorded inputs are finite: where the forward made it."""
    seen, stack, ancestors = {target}, [target], []
    while stack:  # an explicit stack: graphs are deep
        n = nodes.get(stack.pop())
        if n is None:
            continue
        ancestors.append(n.id)
        for i in n.inputs:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    order = {n: k for k, n in enumerate(nodes)}
    for nid in sorted(ancestors, key=order.__getitem__):  # topological: inputs first
        n = nodes[nid]
        inputs = [nodes[i] for i in n.inputs if i in nodes]
        if nonfinite(n.value) and not any(nonfinite(x.value) for x in inputs):
            for x in inputs:  # a custom Function's output is not recorded: it comes from there
                if x.value is None and x.meta.get("opaque") == "custom autograd.Function":
                    return _forward(nodes, x, after=n)
            return _forward(nodes, n)
    return None


def _forward(nodes: dict, node: Any, after: Any = None) -> Culprit:
    """A node whose forward value is non-finite though its recorded inputs are not (or, with
    `after`, an unrecorded custom Function whose consumer `after` is the first non-finite)."""
    op, dtype = node.op, _dtype(node)
    what = "NaN" if has_nan(node.value if after is None else after.value) else "inf"
    unrecorded = [nodes[i] for i in node.inputs if i in nodes and nodes[i].kind == "const"]
    if node.kind == "input":
        return _culprit(node, "forward", f"{what} input", f"the input {node.id} holds {what}",
                        "check where this tensor is set (a bad initialisation or update?)")
    if node.meta.get("opaque") == "custom autograd.Function":
        seen = f" (its output is not recorded; {after.id}, {after.op}, is the first {what} " \
            "after it)" if after is not None else ""
        return _culprit(node, "forward", f"{what} from a custom Function", f"the forward of the "
                        f"custom autograd.Function {op} returned {what} from finite inputs{seen}",
                        f"check {op}'s forward: backtrace.testing.check_function({op}, ...)")
    if what == "inf" and op not in _SINGULAR and dtype in _MAX and not unrecorded:
        return _culprit(node, "forward", "overflow", f"{op} overflowed: the result exceeds "
                        f"{dtype}'s maximum ({_MAX[dtype]:g}) though its inputs are finite",
                        _OVERFLOW_FIX if dtype in ("float16", "bfloat16") else
                        "rescale the values (or compute in a stable form, e.g. logsumexp)")
    if op in _SINGULAR:
        cause = "0/0" if what == "NaN" and op in _DIVISIONS else f"{what} at a singular point"
        return _culprit(node, "forward", cause, f"{op} made {what} from finite inputs "
                        f"({_singular_words(op)})", _fix(nodes, node, None))
    if unrecorded:
        names = ", ".join(f"{x.id} (slot {node.inputs.index(x.id)})" for x in unrecorded)
        return _culprit(node, "forward", f"{what} in an input that needs no gradient",
                        f"{op}'s inputs that require grad are finite, so the {what} comes from "
                        f"one that does not: {names}: data, a buffer or a constant",
                        "check the input data (torch.isnan(x).any()) and buffers")
    return _culprit(node, "forward", f"{what} in forward", f"{op} made {what} from finite inputs",
                    "")


# -- words and fixes
_OVERFLOW_FIX = ("compute this op in float32 (torch.autocast keeps such ops in float32), or "
                 "scale the values down; for gradients, torch.amp.GradScaler")


def _singular_words(op: str) -> str:
    """Where op's derivative blows up, in a few words."""
    return {"sqrt": "1/(2√x): inf at 0, NaN for x < 0",
            "rsqrt": "-1/(2x√x): inf at 0, NaN for x < 0",
            "log": "1/x: inf at 0 (log of 0 is -inf, of a negative NaN)",
            "log2": "1/(x ln 2): inf at 0", "log10": "1/(x ln 10): inf at 0",
            "log1p": "1/(1+x): inf at -1", "div": "1/b and -a/b²: inf or NaN where b is 0",
            "true_divide": "1/b and -a/b²: inf or NaN where b is 0",
            "reciprocal": "-1/x²: inf at 0", "pow": "p·x^(p-1): inf at 0 for p < 1",
            "norm": "x/‖x‖: 0/0 at a zero vector",
            "linalg_vector_norm": "x/‖x‖: 0/0 at a zero vector",
            "acos": "±1/√(1-x²): inf at ±1", "asin": "±1/√(1-x²): inf at ±1",
            }.get(op, "its derivative is not finite here")


def _fix(nodes: dict, node: Any, masked: str | None) -> str:
    """The known cure for a non-finite derivative of node, if there is one."""
    op = node.op
    inputs = [nodes[i] for i in node.inputs if i in nodes]
    if masked and op in _SINGULAR:
        return ("the double where: feed the masked branch safe inputs too, e.g. "
                f"torch.where(x > 0, torch.{op}(torch.where(x > 0, x, 1.0)), 0.0)")
    if op in ("log", "log_") and any(x.op in ("softmax", "softmax_") or "Softmax" in
                                     x.meta.get("torch_type", "") for x in inputs):
        return ("use torch.log_softmax(z, dim) (or F.cross_entropy on the logits) instead of "
                "log(softmax(z)): softmax underflows to 0 and log(0) = -inf")
    if op in _DIVISIONS and any(x.op in _NORMS or "Norm" in x.meta.get("torch_type", "")
                                for x in inputs):
        return "add an epsilon: x / (x.norm() + 1e-12), or F.normalize(x, dim=...)"
    if op in _NORMS:
        return "add an epsilon inside the norm: (v.pow(2).sum() + 1e-12).sqrt()"
    if op in ("sqrt", "rsqrt", "pow"):
        return "keep the input away from 0: torch.sqrt(x + 1e-12) or x.clamp_min(1e-12)"
    if op in ("log", "log2", "log10"):
        return "keep the input away from 0: torch.log(x.clamp_min(1e-12))"
    if op in _DIVISIONS:
        return "keep the divisor away from 0: a / (b + eps) or a / b.clamp_min(eps)"
    return ""


def _dtype(node: Any) -> str:
    dtypes = node.meta.get("dtypes") or ()
    if dtypes:
        return str(dtypes[0])
    v = node.value
    return str(getattr(v, "dtype", "")).removeprefix("torch.")


def _culprit(node: Any, where: str, cause: str, words: str, fix: str, **more: Any) -> Culprit:
    meta = node.meta
    return Culprit(node.id, node.op, str(meta.get("module", "") or ""),
                   str(meta.get("source", "") or ""), where, cause, words, fix,
                   torch_type=str(meta.get("torch_type", "")),
                   shapes=tuple(meta.get("shapes") or ()), dtypes=tuple(meta.get("dtypes") or ()),
                   value=node.value, **more)


# -- the report as text
def lines(report: NonFinite, short: Any = None, width: int | None = None) -> list[str]:
    """The report as lines of plain text, wrapped to `width` (continuations indented);
    `short(source)` shortens source locations."""
    text = _lines(report, short or (lambda s: s))
    if width is None:
        return text
    out = []
    for line in text:  # "0 × inf" stays on one line (a no-break space while wrapping)
        lead = " " * (len(line) - len(line.lstrip()) + 4)
        out += [w.replace("\u00a0", " ") for w in textwrap.wrap(
            line.replace(" × ", "\u00a0×\u00a0"), width, subsequent_indent=lead,
            break_on_hyphens=False)] or [""]
    return out


def _lines(report: NonFinite, short: Any) -> list[str]:
    c, labels = report.culprit, report.labels
    call = f" in backward call {report.call}" if report.call is not None else ""
    kind = "gradient" if c.where == "backward" else "forward value"
    out = [f"first non-finite {kind}{call}: {_where(c, labels)}", *_code(c, short),
           f"  cause: {c.cause}: {c.words}"]
    if c.where == "backward":
        out += [f"  upstream      {describe(c.upstream)}",
                f"  local         ∂{c.node}/∂{c.input}: {_local(c.local)}",
                f"  contribution  → {c.input} ({labels.get(c.input, '')}): "
                f"{describe(c.contribution)}"]
    dtypes = f", {', '.join(map(str, c.dtypes))}" if c.dtypes else ""
    out.append(f"  value         {describe(c.value)}{dtypes}")
    if c.fix:
        out.append(f"  fix: {c.fix}")
    f = report.first_forward
    if f is not None and f.node != c.node:
        out += [f"first non-finite forward value: {_where(f, labels)}", *_code(f, short),
                f"  {f.cause}: {f.words}", f"  value         {describe(f.value)}"]
        if f.fix and f.fix != c.fix:
            out.append(f"  fix: {f.fix}")
    elif f is not None and c.where == "backward":
        out.append(f"(its forward value is already {'NaN' if has_nan(f.value) else 'inf'})")
    if report.propagators:
        shown = ", ".join(f"{p} ({labels.get(p, '')})" for p in report.propagators[:6])
        more = ", ..." if len(report.propagators) > 6 else ""
        n = len(report.propagators)
        out.append(f"passed on by {n} node{'s' * (n > 1)} after it (already non-finite "
                   f"upstream): {shown}{more}")
    return out


def _where(c: Culprit, labels: dict) -> str:
    module = f" in module {c.module}" if c.module else ""
    return f"{labels.get(c.node, c.op)}{module} (node {c.node})"


def _code(c: Culprit, short: Any) -> list[str]:
    """The source location and, when the file can be read, its line of code."""
    if not c.source:
        return []
    path, _, line = c.source.rpartition(":")
    code = linecache.getline(path, int(line)).strip() if line.isdigit() else ""
    return [f"  {short(c.source)}: {code}" if code else f"  {short(c.source)}"]


def _local(local: Any) -> str:
    if isinstance(local, str):
        return local or "—"
    return describe(local)
