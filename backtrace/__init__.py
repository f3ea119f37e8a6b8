"""backtrace: see backpropagation, node by node.

    >>> import backtrace
    >>> t = backtrace.explain("f=(x+y)*z", x=-2, y=5, z=-4)
    >>> t.value, t.grads
    (-12.0, {'x': -4.0, 'y': -4.0, 'z': 3.0})
"""
from __future__ import annotations

import importlib
from typing import Any

from .engine import explain, run
from .errors import (BacktraceError, DomainError, FormulaSyntaxError, LimitError,
                     MissingValueError, TraceFormatError, UsageError)
from .parser import Limits, parse
from .render import display as _display  # noqa: F401  (installs Trace.to_graphviz and Jupyter's picture)
from .traces import Edge, Step, Trace, TraceNode
from .value import Value
from .values import TensorStats

__version__ = "0.1.0"

# Names whose modules import torch or other heavy packages: loaded on first use only.
_LAZY = {
    "diff": "backtrace.rundiff:diff",
    "export": "backtrace.render.formats:export",
    "show": "backtrace.render.formats:show",
    "show_ops": "backtrace.render.ops_view:show_ops",
    "trace": "backtrace.tracer:trace",
    "view": "backtrace.render.formats:view",
    "watch": "backtrace.training.watch:watch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'backtrace' has no attribute {name!r}")


__all__ = ["BacktraceError", "DomainError", "Edge", "FormulaSyntaxError", "LimitError", "Limits",
           "MissingValueError", "Step", "TensorStats", "Trace", "TraceFormatError", "TraceNode",
           "UsageError", "Value", "explain", "parse", "run", *_LAZY]
