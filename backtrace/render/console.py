"""Where CLI output goes: a rich console that degrades to plain text off a terminal."""
from __future__ import annotations

import os
import sys

from rich.console import Console

# Off a terminal nothing wraps: text and tables are as wide as they are (grep, diff, files).
PIPE_WIDTH = 100_000


def is_terminal() -> bool:
    """True when stdout is an interactive terminal and NO_COLOR is not set."""
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


class _Trimmed:
    """stdout without the spaces rich pads a table's last column with (files, pipes, diffs)."""

    def __init__(self, stream) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def console() -> Console:
    """A console for stdout: colour and the terminal's width on a terminal, plain text that never
    wraps (and ends no line in spaces) elsewhere."""
    if is_terminal():
        return Console()
    return Console(file=_Trimmed(sys.stdout), color_system=None, width=PIPE_WIDTH, emoji=False,
                   highlight=False, soft_wrap=False)
