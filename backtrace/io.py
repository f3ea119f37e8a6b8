"""Writing files atomically: a temporary file in the same folder, then a rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import BacktraceError


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write all of `data` to `path` or nothing: a failure never leaves a truncated file."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise BacktraceError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BacktraceError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise
