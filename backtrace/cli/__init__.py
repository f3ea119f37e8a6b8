"""The `backtrace` command: a thin click group. Subcommands load lazily so --help is instant."""
from __future__ import annotations

import importlib
import sys

import click

from ..errors import BacktraceError, FormulaSyntaxError

# name -> "module:attribute"; adding a command is one line here plus its module.
COMMANDS = {
    "descend": "backtrace.cli.descend_cmd:descend",
    "diff": "backtrace.cli.diff_cmd:diff",
    "explain": "backtrace.cli.explain:explain",
    "nan": "backtrace.cli.nan_cmd:nan",
    "ops": "backtrace.cli.ops:ops",
    "render": "backtrace.cli.render_cmd:render",
    "trace": "backtrace.cli.trace_cmd:trace",
    "train": "backtrace.cli.train_cmd:train",
}


class BacktraceGroup(click.Group):
    """Loads commands on demand and turns BacktraceError into one line and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BacktraceError as err:
            report(err)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def report(err: BacktraceError) -> None:
    """Print an error as one line (plus a caret line for syntax errors), no traceback."""
    click.echo(f"error: {err}", err=True)
    if isinstance(err, FormulaSyntaxError) and err.caret():
        click.echo(err.caret(), err=True)


@click.group(cls=BacktraceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backtrace", prog_name="backtrace")
def cli() -> None:
    """backtrace: see backpropagation, node by node.

    \b
    Start here:
      backtrace explain "f=(x+y)*z" --x -2 --y 5 --z -4        the chain rule, step by step
      backtrace explain "f=(x+y)*z" x=-2 y=5 z=-4 -o graph.svg  the annotated graph
      backtrace descend "L=(w-3)**2" --w 0 --lr 0.1             gradient descent, step by step
      backtrace trace train.py                                  per-node gradients of real PyTorch
      backtrace nan train.py                                    where the first NaN comes from
      backtrace ops                                             operators and derivative rules
    Each command's --help has more. Exit codes: 0 ok, 1 computation or I/O error, 2 usage error.
    """


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="backtrace"))
