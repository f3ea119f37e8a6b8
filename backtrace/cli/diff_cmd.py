"""`backtrace diff A.json B.json`: where two runs' backward passes start to differ."""
from __future__ import annotations

import click

_HELP = (
    "\b\nExamples:\n"
    "  backtrace trace -o fp32.json train.py          save one run's trace\n"
    "  backtrace trace -o bf16.json train.py --bf16   a second run (its own flag)\n"
    "  backtrace diff fp32.json bf16.json             the report\n"
    "  backtrace diff old.json new.json --rtol 1e-3   a looser tolerance\n"
    "  backtrace diff a.json b.json --format json | jq .first\n"
    "  backtrace diff a.json b.json -o d.html       also B's page with a Diff tab\n"
    "\b\nValues agree when |a - b| <= atol + rtol * max(|a|, |b|), element by element\n"
    "(for statistics: norm, mean and max |x|). Exit codes: 0 the runs agree, 1 they\n"
    "differ (or a file cannot be read), 2 they cannot be compared (other models)."
)


@click.command(epilog=_HELP)
@click.argument("a", metavar="A.json", type=click.Path(dir_okay=False))
@click.argument("b", metavar="B.json", type=click.Path(dir_okay=False))
@click.option("--rtol", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Relative tolerance.")
@click.option("--atol", type=click.FloatRange(min=0), default=1e-6, show_default=True,
              help="Absolute tolerance.")
@click.option("--format", "fmt", type=click.Choice(["table", "plain", "markdown", "json"]),
              default=None, help="table (the default on a terminal), plain (elsewhere), "
                                 "markdown, or json: {first, modules, parameters, ...}.")
@click.option("--limit", type=click.IntRange(min=0), default=10, show_default=True,
              help="Rows per table; 0 shows every row.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Also write B's explorer page (.html) with the report in a Diff tab.")
def diff(a: str, b: str, rtol: float, atol: float, fmt: str | None, limit: int,
         output: str | None) -> None:
    """Align the traces in A.json and B.json (two runs of one model: eager and torch.compile,
    fp32 and bf16, two versions of the code) and name the first node, in backward order, whose
    inputs agree but whose output differs; then the relative gradient error per module and
    per parameter. Exit code 1 when they differ beyond the tolerance."""
    import json

    from ..rundiff import diff as compare
    from ..traces import load

    trace_a, trace_b = load(a), load(b)
    report = compare(trace_a, trace_b, rtol=rtol, atol=atol, names=("A", "B"))
    if output is not None:
        from ..rundiff.view import explore

        click.echo(f"wrote {explore(report, trace_b, output)}", err=True)
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, allow_nan=False))
    else:
        from ..rundiff.view import show
        show(report, fmt, limit or None)
    if report.differ:
        click.get_current_context().exit(1)
