"""The JSON schema backtrace.trace/1: every trace survives a round trip; bad files fail clearly."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import backtrace
from backtrace import BacktraceError, Trace, TraceFormatError
from backtrace.ops import FUNCTIONS, INFIX_OPS
from backtrace.parser import parse
from backtrace.torch_engine import run as run_torch

from .hostile_traces import paths

UNARY = sorted(name for name, op in FUNCTIONS.items() if op.arity == 1)
BINARY_CALLS = sorted(name for name, op in FUNCTIONS.items() if op.arity == 2)

# Random formulas over x, y, z built from the whole op table: infix, prefix minus and calls.
leaves = st.sampled_from(["x", "y", "z"]) | st.sampled_from(["2", "0.5", "3", "pi", "1e-1"])
formulas = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(sorted(INFIX_OPS)), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(UNARY), inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(BINARY_CALLS), inner, inner).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=8,
)
values = st.fixed_dictionaries({k: st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 3))
                                for k in "xyz"})
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _trace(engine, formula: str, vals: dict) -> Trace:
    graph = parse(formula)
    vals = {k: v for k, v in vals.items() if k in graph.input_names}
    try:
        return backtrace.run(graph, vals) if engine == "reference" else run_torch(graph, vals)
    except BacktraceError:  # log of a negative, overflow, ...: not a trace to round-trip
        assume(False)


@FAST
@given(formulas, values)
def test_reference_traces_round_trip(formula, vals):
    t = _trace("reference", formula, vals)
    text = t.to_json()
    back = Trace.from_json(text)
    assert back == t
    assert back.to_json() == text
    assert json.loads(text)["schema"] == "backtrace.trace/1"


@settings(FAST, max_examples=15)
@given(formulas, values)
def test_torch_engine_traces_round_trip(formula, vals):
    t = _trace("torch", formula, vals)
    back = Trace.from_json(t.to_json())
    assert back == t
    assert back.grads == t.grads


@pytest.mark.parametrize("level", ["stats", "full"])
def test_traced_pytorch_round_trips_tensors_and_stats(level):
    w = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], requires_grad=True)
    with backtrace.trace(names={"w": w}, level=level) as t:
        torch.tanh(w @ torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])).sum().backward()
    text = t.trace.to_json()
    back = Trace.from_json(text)
    # Nodes, steps and meta hold tensors (full) or TensorStats (stats); all come back equal.
    assert back == t.trace
    assert back.to_json() == text
    if level == "full":
        assert torch.equal(back.grads["w"], w.grad)
        assert back.grads["w"].dtype == torch.float32


def test_non_finite_numbers_survive():
    nan = float("nan")
    t = Trace("reference", "f", (backtrace.TraceNode("f", "input", value=float("inf"),
                                                     grad=float("-inf"), kind="input"),), (),
              {"note": nan})
    data = json.loads(t.to_json())  # valid JSON: no bare NaN/Infinity
    assert data["nodes"][0]["value"] == {"float": "inf"}
    back = Trace.from_json(t.to_json())
    assert back.nodes[0].value == float("inf") and back.nodes[0].grad == float("-inf")


# ---------------------------------------------------------------- bad files

GOOD = json.loads(backtrace.explain("q = x + y; f = q * z", x=-2, y=5, z=-4).to_json())


def test_a_newer_major_schema_is_refused_with_an_upgrade_hint():
    with pytest.raises(TraceFormatError, match=r"trace schema backtrace.trace/2 is newer than this "
                                               r"backtrace reads \(backtrace.trace/1\); upgrade"):
        Trace.from_dict({**GOOD, "schema": "backtrace.trace/2"})


@pytest.mark.parametrize("data, message", [
    ("{nope", "not JSON"),
    ("[1, 2]", "no 'schema' key"),
    (json.dumps({**GOOD, "schema": "torchviz/1"}), "unknown schema 'torchviz/1'"),
    (json.dumps({**GOOD, "schema": "backtrace.trace/one"}), "unknown schema"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "nodes"}), "malformed trace: top level: no 'nodes'"),
    (json.dumps({**GOOD, "nodes": [{"op": "input"}]}), "malformed trace"),
    (json.dumps({**GOOD, "steps": "abc"}), "malformed trace"),
    (json.dumps({**GOOD, "nodes": [{**GOOD["nodes"][0], "value": {"bogus": 1}}]}),
     "unknown value encoding"),
])
def test_malformed_files_give_a_clear_error(data, message):
    with pytest.raises(TraceFormatError, match=message):
        Trace.from_json(data)


PATHS = [p for p in paths(GOOD) if p[0] != "schema"]
JUNK = st.sampled_from([None, "text", 7, -1.5, [], {}, [1, "a"], {"float": "bogus"},
                        {"stats": 3}, {"list": 5}])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PATHS), JUNK, st.booleans())
def test_damaged_files_load_or_fail_with_trace_format_error(path, junk, delete):
    data = copy.deepcopy(GOOD)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk
    try:
        Trace.from_json(json.dumps(data))
    except TraceFormatError as exc:
        assert str(exc)  # one clear line, never a KeyError or TypeError from inside


def test_sparse_gradients_are_written_dense():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    with backtrace.trace(model=emb, level="full") as t:
        emb(torch.tensor([1, 3, 1])).sum().backward()
    assert emb.weight.grad.is_sparse
    back = Trace.from_json(t.trace.to_json())
    assert torch.equal(back.grads["weight"], emb.weight.grad.to_dense())


def test_stats_written_before_the_nonfinite_count_read_as_zero_and_missing_ones_fail():
    x = torch.tensor([1.0, -3.0], requires_grad=True)
    with backtrace.trace(names={"x": x}) as t:
        (x * 2).sum().backward()
    data = json.loads(t.trace.to_json())
    leaf = next(n for n in data["nodes"] if n["id"] == "x")
    assert leaf["grad"]["stats"].pop("nonfinite") == 0  # as an older file has it
    back = Trace.from_dict(data).node("x").grad
    assert (back.norm, back.absmax, back.nonfinite) == (pytest.approx(8 ** 0.5), 2.0, 0.0)
    del leaf["grad"]["stats"]["norm"]  # a statistic without a default is required
    with pytest.raises(TraceFormatError, match="stats lack norm"):
        Trace.from_dict(data)
