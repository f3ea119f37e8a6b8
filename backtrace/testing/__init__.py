"""Gradient assertions for tests: engines compared node by node, custom backwards checked against
finite differences, golden traces. Importable without pytest; torch loads only when asked for.

    assert_grads("f = (x + y) * z", {"x": -2, "y": 5, "z": -4}, expected={"x": -4})
    check_function(MyMul, torch.randn(3), torch.randn(3))
    assert_trace_matches(trace, "tests/golden/name.json")

What the pytest plugin sets is set the same way by anyone, for one block:

    with configure(update_goldens=True):          # assert_trace_matches writes goldens
        ...
    with configure(on_trace=traces.append):       # every Trace made here is passed on
        ...
    current_settings().update_goldens

One module per job: `graphs` (Python functions as graphs, `explain_function`), `grads`
(`assert_grads`), `functions` (`check_function`), `golden` (`assert_trace_matches`), `settings`.
"""
from __future__ import annotations

from .functions import FunctionCheck, check_function
from .functions import SlotCheck as SlotCheck  # importable from here as before, not starred
from .golden import assert_trace_matches
from .grads import ENGINES as ENGINES
from .grads import assert_grads
from .graphs import explain_function, function_graph
from .settings import Settings, configure, current_settings

__all__ = ["assert_grads", "assert_trace_matches", "check_function", "explain_function",
           "function_graph", "FunctionCheck", "Settings", "configure", "current_settings"]
