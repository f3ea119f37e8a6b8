"""Writing files atomically: a temporary file beside the target, then a rename; never half a file.

A symlink is written through (its target is replaced, the link stays); a device or pipe
(/dev/stdout) is written to directly; a file this process may not write is refused, not
replaced; a long name gets a short temporary name; SIGTERM during a write removes the temporary
file before the process ends. `check_writable` says before anything is written whether a write
can succeed, so several outputs are written all or none."""
from __future__ import annotations

import contextlib
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import BacktraceError


def _fail(target: Path, why: str) -> BacktraceError:
    return BacktraceError(f"cannot write {target}: {why}")


def destination(path: str | os.PathLike) -> Path:
    """Where writing `path` puts the bytes: through symlinks to the file they name."""
    target = Path(path)
    try:
        return Path(os.path.realpath(target)) if target.is_symlink() else target
    except OSError as exc:
        raise _fail(target, exc.strerror or str(exc)) from None


def check_writable(path: str | os.PathLike) -> None:
    """Raise the error writing `path` would end in (no folder, a folder in the way, a read-only
    file or folder), without writing anything."""
    target = destination(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _fail(Path(path), exc.strerror or str(exc)) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise _fail(Path(path), "it is a folder")
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not os.access(target, os.W_OK):
            raise _fail(Path(path), "permission denied")
        return  # a device or pipe: written directly
    if st is not None and not os.access(target, os.W_OK):
        raise _fail(Path(path), "the file is read-only (permission denied)")
    folder = target.parent
    if not folder.is_dir():
        raise _fail(Path(path), f"no folder {folder}" if not folder.exists() else f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(Path(path), f"permission denied in {folder}")


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write all of `data` to `path` or nothing: a failure never leaves a truncated file."""
    payload = data.encode() if isinstance(data, str) else data
    check_writable(path)
    target = destination(path)
    try:
        if target.exists() and not stat.S_ISREG(target.stat().st_mode):
            with open(target, "wb") as f:  # /dev/stdout, a pipe: no rename possible
                f.write(payload)
            return
    except OSError as exc:
        raise _fail(Path(path), exc.strerror or str(exc)) from None
    # A short temporary name: `.<name>.<random>.tmp` for a 250-character name is too long.
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name[:40]}.", suffix=".tmp")
    except OSError as exc:
        raise _fail(Path(path), exc.strerror or str(exc)) from None
    try:
        with sigterm_raises(Terminated), os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            os.fchmod(f.fileno(), _mode_for(target))
            os.fsync(f.fileno())
            os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _fail(Path(path), exc.strerror or str(exc)) from None
        raise


class Terminated(SystemExit):
    """SIGTERM arrived while a file was being written (exit status 143, as if killed)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextlib.contextmanager
def sigterm_raises(error: Callable[[], BaseException]) -> Iterator[None]:
    """While the block runs, SIGTERM raises error() in it instead of killing the process (only
    the main thread may set handlers; elsewhere the default stays). Writing a file: the temporary
    file is removed, then the process ends; running a user's script: its end is reported."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise error()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _mode_for(target: Path) -> int:
    """The existing file's mode, or 0666 less the umask for a new file."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def check_folder(path: str | os.PathLike) -> None:
    """Raise the error making folder `path` (or writing into it) would end in."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise BacktraceError(f"cannot write into {folder}: it is a file, not a folder")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BacktraceError(f"cannot make {folder}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BacktraceError(f"cannot write into {folder}: permission denied in {parent}")


def make_folder(path: str | os.PathLike) -> Path:
    """Folder `path`, made if missing, with one-line errors."""
    check_folder(path)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BacktraceError(f"cannot make {path}: {exc.strerror or exc}") from None
    return Path(path)
