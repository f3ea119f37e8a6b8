"""The Trace: lookups, lazy views and the versioned JSON schema."""
from __future__ import annotations

import json
import math

import pytest

from backtrace import Trace, TraceFormatError, explain
from backtrace.traces import SCHEMA, TraceNode
from backtrace.values import TensorStats


def test_json_round_trip(textbook, neuron):
    for formula, values in (textbook, neuron):
        t = explain(formula, **values)
        back = Trace.from_json(t.to_json())
        assert back == t
        assert back.grads == t.grads and back.value == t.value


def test_json_has_schema_value_and_grads(textbook):
    data = json.loads(explain(textbook[0], **textbook[1]).to_json())
    assert data["schema"] == SCHEMA == "backtrace.trace/1"
    assert data["value"] == -12.0
    assert data["grads"] == {"x": -4.0, "y": -4.0, "z": 3.0}
    assert [s["node"] for s in data["steps"]] == ["f", "%0"]
    assert data["steps"][0]["edges"][0] == {"slot": 0, "input": "%0", "local": -4.0, "rule": "z",
                                            "contribution": -4.0, "note": ""}


def test_non_finite_numbers_and_stats_survive_json():
    stats = TensorStats((2, 3), "float32", 1.5, -0.25, math.inf)
    t = Trace("torch", "y", (TraceNode("y", "mul", (), "", stats, math.nan, "op", {"module": "fc"}),), ())
    back = Trace.from_json(t.to_json())
    assert back.node("y").value == stats
    assert math.isnan(back.node("y").grad)
    assert back.node("y").meta == {"module": "fc"}


@pytest.mark.parametrize("text,message", [
    ('{"schema": "backtrace.trace/2", "nodes": [], "steps": []}', "newer"),
    ('{"schema": "other/1"}', "unknown schema"),
    ('{"nodes": []}', "no 'schema'"),
    ('{"schema": "backtrace.trace/1", "nodes": [{"op": "x"}], "steps": []}', "malformed"),
    ("not json", "not JSON"),
    ("[1, 2]", "no 'schema'"),
])
def test_bad_files_give_clear_errors(text, message):
    with pytest.raises(TraceFormatError, match=message):
        Trace.from_json(text)


def test_node_lookup_and_consumers(textbook):
    t = explain(textbook[0], **textbook[1])
    assert t.node("z").value == -4.0
    with pytest.raises(KeyError, match="no node"):
        t.node("nope")
    assert [(s.node, e.slot) for s, e in t.consumers("x")] == [("%0", 0)]


def test_views_are_lazy_and_indexable(textbook):
    t = explain(textbook[0], **textbook[1])
    assert t.nodes[-1].id == "f" and t.steps[-1].node == "%0"
    assert [n.id for n in t.nodes[1:3]] == ["y", "%0"]
    with pytest.raises(IndexError):
        t.steps[5]
