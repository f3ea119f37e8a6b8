"""How a trace is shown: one set of options that every format, picture and view reads."""
from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import RenderError, UsageError
from ..fold import HIDE
from .layout import DEFAULT_TIMEOUT

MODES = ("backward", "forward")
COLOURS = ("grad", "kind")
DIRECTIONS = ("auto", "LR", "TB")  # auto: whichever fits a screen (backtrace.render.fit)


@dataclass(frozen=True)
class Options:
    """Drawing options (the CLI's flags of the same names) and the part of the trace to show."""

    mode: str = "backward"  # forward: values only; backward: gradients too
    depth: int | None = None  # fold modules this deep into boxes (None: the deepest that fits)
    hide: tuple[str, ...] = ()  # node kinds to leave out (backtrace.fold.HIDE)
    budget: int | None = None  # most boxes handed to dot (None: backtrace.fold.DEFAULT_BUDGET)
    colour: str | None = None  # fill by gradient norm ("grad") or by kind (None: grad for tensors)
    dot: str | None = None  # a Graphviz binary instead of the embedded engine
    timeout: float = DEFAULT_TIMEOUT  # seconds a whole render may take (folding and every layout)
    direction: str = "auto"  # LR: left to right; TB: top to bottom; auto: the one that fits
    module: str | None = None  # tables: only the nodes inside this module path
    deadline: float | None = None  # set by start(): when (time.monotonic()) the render must end

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.colour is not None and self.colour not in COLOURS:
            raise UsageError(f"colour must be one of {', '.join(COLOURS)}, not {self.colour!r}")
        if self.direction not in DIRECTIONS:
            raise UsageError(f"direction must be one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        unknown = [h for h in self.hide if h not in HIDE]
        if unknown:
            raise UsageError(f"cannot hide {', '.join(unknown)}: choose from {', '.join(HIDE)}")
        if self.depth is not None and self.depth < 1:
            raise UsageError(f"depth must be 1 or more, not {self.depth}")

    @classmethod
    def of(cls, base: Options | None = None, **changes: Any) -> Options:
        """`base` (or the defaults) with the given changes; None leaves an option as it is."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"unknown option {', '.join(unknown)} (options: {', '.join(sorted(known))})")
        given = {k: tuple(v) if k == "hide" else v for k, v in changes.items() if v is not None}
        return replace(base or cls(), **given)

    def start(self) -> Options:
        """These options with the clock started: every step drawn from them shares one timeout
        (a render may fold, then lay out several candidates; each gets what is left)."""
        if self.deadline is not None:
            return self
        return replace(self, deadline=time.monotonic() + self.timeout)

    def left(self) -> float:
        """Seconds of the timeout left for the next step; a RenderError when none are."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RenderError(f"drawing took longer than {self.timeout:g} s: fold the graph "
                              "(--depth, --hide) or raise --timeout")
        return left
