"""Where the user's code made a node: the file and line of the first frame that is neither
torch's nor backtrace's, found from inside the forward's torch-call recorder."""
from __future__ import annotations

import os
import sys

_OURS = ("torch", "backtrace")  # frames of these packages are not the user's
_SKIP: dict[object, bool] = {}  # code object -> whether its frames are skipped (cached)


def caller(depth: int = 1) -> tuple[str, int] | None:
    """(path, line) of the innermost user frame above the caller's, None if there is none (made
    text by `text` only when a Trace is built: this runs for every node the forward makes)."""
    frame = sys._getframe(depth)
    while frame is not None:
        code = frame.f_code
        skip = _SKIP.get(code)
        if skip is None:
            name = frame.f_globals.get("__name__", "")
            skip = _SKIP[code] = name.partition(".")[0] in _OURS
        if not skip:
            return code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


def text(source: tuple[str, int] | None) -> str:
    """``path:line`` (the empty text for no source)."""
    return f"{source[0]}:{source[1]}" if source else ""


def short(source: str) -> str:
    """A source location as people read it: relative to the working directory when inside it."""
    path, _, line = source.rpartition(":")
    if not path:
        return source
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return source
    return f"{rel}:{line}" if not rel.startswith("..") else source
