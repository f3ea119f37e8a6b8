"""The command line through click's CliRunner: formats, value syntax and exit codes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from backtrace.cli import cli

LECTURE = ["explain", "f=(x+y)*z", "--x", "-2", "--y", "5", "--z", "-4"]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_lecture_example_plain_off_a_terminal():
    result = invoke(*LECTURE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "╭" not in out and "\x1b[" not in out  # not a terminal: plain text
    assert "∂f/∂x = ∂f/∂%0 · ∂%0/∂x = (-4) · (1) = -4" in out
    assert "∂f/∂z = ∂f/∂z = (3) = 3" in out
    assert "f     %0 * z        -12" in out


@pytest.mark.parametrize("values", [
    ["--x=-2", "--y=5", "--z=-4"], ["x=-2", "y=5", "z=-4"], ["--x", "-2", "y=5", "--z=-4"]])
def test_value_syntaxes(values):
    result = invoke("explain", "f=(x+y)*z", "--format", "json", *values)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["grads"] == {"x": -4.0, "y": -4.0, "z": 3.0}


def test_json_format_is_the_whole_trace():
    data = json.loads(invoke(*LECTURE, "--format", "json").output)
    assert data["schema"] == "backtrace.trace/1"
    assert data["value"] == -12.0 and len(data["steps"]) == 2


def test_table_and_markdown_formats():
    table = invoke(*LECTURE, "--format", "table").output
    assert "╭" in table and "│ f    │ %0 * z     │   -12 │" in table
    markdown = invoke(*LECTURE, "--format", "markdown").output
    assert "## Backward pass" in markdown
    assert "| step | node | upstream | input | local derivative | local | contribution |" in markdown
    assert "| 1    | f    |        1 | %0    | ∂f/∂%0 = z       |    -4 |           -4 |" in markdown


def test_output_file_json(tmp_path):
    path = tmp_path / "t.json"
    result = invoke(*LECTURE, "-o", str(path))
    assert result.exit_code == 0
    assert json.loads(path.read_text())["value"] == -12.0


def test_step_is_ignored_when_stdin_is_not_a_terminal():
    result = invoke(*LECTURE, "--step", input="")
    assert result.exit_code == 0 and "∂f/∂y" in result.output


@pytest.mark.parametrize("args,code,message", [
    (["explain", "f=(x+y))*z", "--x", "1", "--y", "2", "--z", "3"], 2, "unexpected ')'"),
    (["explain", "f=x*y", "--x", "1"], 2, "no value for input y"),
    (["explain", "f=x*y", "--x", "one", "--y", "2"], 2, "must be a number, got 'one'"),
    (["explain", "f=x*y", "--x", "1", "--y"], 2, "--y needs a value"),
    (["explain", "f=x", "--x", "1", "--x", "2"], 2, "given twice"),
    (["explain", "f=x", "--x", "1", "oops"], 2, "unexpected argument 'oops'"),
    (["explain", "f=x", "--x", "1", "--w", "2"], 2, "'w' is not an input"),
    (["explain", "f=log(x)", "--x", "-1"], 1, "f = log(x) with x = -1"),
    (["explain", "f=1/x", "--x", "0"], 1, "division by zero"),
    (["explain", "9**9**9**9"], 1, "overflow"),
    (["explain", "(" * 5000 + "x" + ")" * 5000, "--x", "1"], 2, "nested more than"),
    (["explain", "x+x+x", "--x", "1", "--max-nodes", "2"], 2, "more than 2 nodes"),
    (["explain", "f=x", "--x", "1", "-o", "/nonexistent/dir/t.json"], 1, "cannot write"),
    (["explain", "f=x", "--x", "1", "-o", "t.xyz"], 2, "cannot tell the format"),
    (["explain", "f=x", "--format", "yaml"], 2, "Invalid value for '--format'"),
])
def test_errors_are_one_line_with_exit_codes(args, code, message):
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_syntax_error_draws_a_caret():
    result = invoke("explain", "f=(x+y))*z", "--x", "1")
    lines = result.output.splitlines()
    assert lines[0].startswith("error: unexpected ')'")
    assert lines[1] == "  f=(x+y))*z" and lines[2] == "         ^"


def test_ops_lists_every_rule_from_the_table():
    from backtrace.ops import OPS

    out = invoke("ops").output
    for op in OPS.values():
        for slot in range(op.arity):
            assert op.rule_text(slot) in out


def test_help_teaches_the_language():
    out = invoke("explain", "--help").output
    assert "sigmoid" in out and "x=-2" in out and "--format" in out


def test_python_m_backtrace_and_no_torch_at_startup():
    code = ("import sys, runpy; sys.argv = ['backtrace', '--help']\n"
            "try: runpy.run_module('backtrace', run_name='__main__')\n"
            "except SystemExit as e: assert e.code in (0, None)\n"
            "assert 'torch' not in sys.modules, 'torch imported at start-up'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "explain" in done.stdout


class Terminal:
    """The CLI on a pseudo-terminal (stdin and stdout both a tty): read what it shows, press keys."""

    def __init__(self, *args: str) -> None:
        import os
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            os.environ["COLUMNS"] = "120"
            os.execv(sys.executable, [sys.executable, "-m", "backtrace", *args])
        self.seen = b""

    def read_until(self, marker: bytes) -> bytes:
        """Everything shown from now until `marker` appears (marker included)."""
        import os
        import select

        start = len(self.seen)
        while marker not in self.seen[start:]:
            ready, _, _ = select.select([self.fd], [], [], 20)
            assert ready, f"timed out waiting for {marker!r}; got {self.seen[-300:]!r}"
            self.seen += os.read(self.fd, 65536)
        return self.seen[start:]

    def press(self, key: bytes) -> None:
        import os

        os.write(self.fd, key)

    def finish(self) -> tuple[int, bytes]:
        """The exit code, and what was shown after the last read."""
        import os

        rest = b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            rest += chunk
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status), rest


def test_step_mode_reveals_gradients_one_key_at_a_time():
    """`--step` in a pseudo-terminal: a key (no Enter) reveals one more backward step, and no
    gradient is shown before the step that computes it."""
    def gradients(shown: bytes) -> dict[str, str]:  # the forward table's gradient column
        text = re.sub(r"\x1b\[[0-9;]*m", "", shown.decode()).split("Backward pass")[0]
        return {line.split()[0]: line.split()[-1] for line in text.splitlines()
                if line.split() and line.split()[0] in ("x", "y", "z", "%0", "f")}

    term = Terminal(*LECTURE, "--step", "--format", "plain")
    first = term.read_until(b"step 0 of 2")
    assert b"-12" in first and "∂f/∂%0".encode() not in first  # the forward pass, no step yet
    assert gradients(first) == {"x": "pending", "y": "pending", "z": "pending", "%0": "pending",
                                "f": "1"}
    term.press(b"n")
    second = term.read_until(b"step 1 of 2")
    assert "∂f/∂%0 = z".encode() in second and "∂%0/∂x".encode() not in second
    assert gradients(second) == {"x": "pending", "y": "pending", "z": "3", "%0": "-4", "f": "1"}
    term.press(b" ")  # the last step: the whole pass at once, no further key
    rest = term.read_until("∂f/∂z = ∂f/∂z = (3) = 3".encode())
    assert b"pending" not in rest.split(b"Forward pass")[-1]
    code, after = term.finish()
    assert code == 0 and b"engines agree" in rest + after and b"step 2 of 2" not in rest + after


def test_step_mode_quits_at_once_on_q_and_prints_nothing_more():
    term = Terminal(*LECTURE, "--step")
    term.read_until(b"q to quit")
    term.press(b"q")  # no Enter
    code, after = term.finish()
    assert code == 0
    assert b"Torch engine" not in after and b"engines agree" not in after
    assert after.strip(b"\r\n ") == b""  # nothing after the prompt but the line end
