"""Output files: written whole or not at all, through symlinks, never over a file we may not write,
with long names, every output checked before any is written, and no temporary file left behind,
not even by SIGTERM in the middle of a write."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from backtrace import explain
from backtrace.cli import cli
from backtrace.errors import BacktraceError
from backtrace.files import check_writable, write_atomic

from .conftest import TEXTBOOK

LECTURE = ["explain", "f=(x+y)*z", "x=-2", "y=5", "z=-4", "--engine", "reference"]


def run(*args: str):
    return CliRunner().invoke(cli, [*LECTURE, *args])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.svg"
    real.write_text("old")
    link = tmp_path / "link.svg"
    link.symlink_to(real)
    result = run("-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().lstrip().startswith("<?xml") and leftovers(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_link_to_a_full_device_fails_in_one_line_and_stays(tmp_path):
    link = tmp_path / "full.svg"
    link.symlink_to("/dev/full")
    result = run("-o", str(link))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {link}: No space left on device"]
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert oct(os.stat("/dev/full").st_mode & 0o777) == oct(0o666)  # the device untouched


def test_a_250_character_name_is_written(tmp_path):
    target = tmp_path / ("n" * 246 + ".svg")
    assert len(target.name) == 250
    result = run("-o", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes().lstrip().startswith(b"<?xml") and leftovers(tmp_path) == []


def test_every_output_is_checked_before_any_is_written(tmp_path):
    first = tmp_path / "a.svg"
    result = run("-o", str(first), "-o", str(tmp_path / "no" / "such" / "b.json"))
    assert result.exit_code == 1 and "no folder" in result.stderr
    assert not first.exists() and list(tmp_path.iterdir()) == []
    result = run("-o", str(first), "-o", str(tmp_path / "b.xyz"))
    assert result.exit_code == 2 and "cannot tell the format" in result.stderr
    assert list(tmp_path.iterdir()) == []
    folder = tmp_path / "d.svg"
    folder.mkdir()
    result = run("-o", str(first), "-o", str(folder))
    assert result.exit_code == 1 and "it is a folder" in result.stderr and not first.exists()


def test_steps_into_a_file_or_under_one_is_one_line(tmp_path):
    page = tmp_path / "page.svg"
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    for steps in (notes, notes / "sub"):
        result = run("-o", str(page), "--steps", str(steps))
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot ") and "Traceback" not in result.output
        assert not page.exists() and notes.read_text() == "a file, not a folder"


def test_read_only_files_are_refused_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "ro.svg"
    target.write_text("keep me")
    target.chmod(0o444)
    # As a user without root's override, access() says no; root's says yes (and root's own
    # `open` would write it too), so the decision is checked here with access() answering as a user.
    monkeypatch.setattr(os, "access", lambda p, mode: not (Path(p) == target and mode & os.W_OK))
    with pytest.raises(BacktraceError, match="read-only"):
        write_atomic(target, "new")
    assert target.read_text() == "keep me" and leftovers(tmp_path) == []


def test_read_only_and_unwritable_folders_as_an_unprivileged_user(tmp_path):
    if os.geteuid() != 0:
        user = None
    else:  # drop to nobody, if the interpreter is reachable for it on this machine
        try:
            probe = subprocess.run([sys.executable, "-c", "import backtrace"], capture_output=True,
                                   preexec_fn=lambda: os.setuid(65534), timeout=60).returncode
        except (OSError, subprocess.SubprocessError):
            probe = 1
        if probe != 0:
            pytest.skip("this machine's Python is not readable by an unprivileged user")
        user = 65534
    tmp_path.chmod(0o777)
    target = tmp_path / "ro.svg"
    target.write_text("keep me")
    target.chmod(0o444)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for out, why in ((target, "read-only"), (locked / "g.svg", "permission denied")):
        done = subprocess.run([sys.executable, "-m", "backtrace", *LECTURE[1:], "-o", str(out)],
                              capture_output=True, text=True, timeout=60,
                              preexec_fn=(lambda: os.setuid(user)) if user else None)
        assert done.returncode == 1 and why in done.stderr and done.stderr.count("\n") == 1
    assert target.read_text() == "keep me" and list(locked.iterdir()) == []


def test_check_writable_says_why(tmp_path):
    with pytest.raises(BacktraceError, match="no folder"):
        check_writable(tmp_path / "missing" / "x.svg")
    check_writable(tmp_path / "fine.svg")  # no error, nothing written
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "big.svg"
    target.write_text("the old picture")
    script = textwrap.dedent(f"""
        import os, sys, time
        real_fsync = os.fsync
        def slow_fsync(fd):  # a slow disk: the write is in progress while we wait
            print("writing", flush=True)
            time.sleep(30)
            real_fsync(fd)
        os.fsync = slow_fsync
        from backtrace.files import write_atomic
        write_atomic({str(target)!r}, b"x" * 1_000_000)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    assert len(leftovers(tmp_path)) == 1  # the temporary file exists while writing
    child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.returncode == 128 + signal.SIGTERM
    assert leftovers(tmp_path) == [] and target.read_text() == "the old picture"


def test_export_from_python_checks_too(tmp_path):
    from backtrace.render.formats import export_all

    t = explain(TEXTBOOK[0], **TEXTBOOK[1])
    with pytest.raises(BacktraceError):
        export_all(t, [tmp_path / "a.svg", tmp_path / "nope" / "b.png"])
    assert list(tmp_path.iterdir()) == []
