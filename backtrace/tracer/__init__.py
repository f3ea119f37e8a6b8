"""Trace real PyTorch autograd: ``with backtrace.trace(model=model) as t: loss.backward()``."""
from __future__ import annotations

from ..errors import NothingToTraceError
from .tracer import LEVELS, Tracer, trace

__all__ = ["LEVELS", "NothingToTraceError", "Tracer", "trace"]
