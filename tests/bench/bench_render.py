"""Benchmark: Trace -> SVG. Formula graphs end to end through the CLI, and torch traces (a transformer
block, a 12-layer model) folded to the default depth, against dot on the unfolded graph (the anchor).

Run: /work/venv/bin/python tests/bench/bench_render.py   (add --system-dot to also time a system dot)
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backtrace import explain  # noqa: E402
from backtrace.render.dot import to_graphviz  # noqa: E402
from backtrace.fold import fold  # noqa: E402
from backtrace.errors import RenderError  # noqa: E402
from backtrace.render.layout import embedded_binary, run_dot  # noqa: E402
from tests import traced  # noqa: E402

TERMS = 10  # sum of tanh(w_i * x_i): 49 nodes
FORMULAS = {
    "textbook (5 nodes)": ("f=(x+y)*z", {"x": -2, "y": 5, "z": -4}),
    "neuron (16 nodes)": ("1/(1+exp(-(w0*x0+w1*x1+w2)))",
                          {"w0": 2, "x0": -1, "w1": -3, "x1": -2, "w2": -3}),
    f"{TERMS} tanh units (49 nodes)": ("+".join(f"tanh(w{i}*x{i})" for i in range(TERMS)),
                                        {**{f"w{i}": 0.1 * i for i in range(TERMS)},
                                         **{f"x{i}": 1 - 0.2 * i for i in range(TERMS)}}),
}


def best(fn, repeat: int = 5) -> float:
    """Median wall time of `repeat` calls, in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "backtrace", *args], check=True, capture_output=True)


def formulas() -> None:
    print("Formula graphs: median of 5 runs, seconds")
    print(f"{'graph':<28} {'explain':>8} {'explain -o g.svg':>17} {'Trace->DOT':>11} {'DOT->SVG':>9}")
    engine = []
    help_text = subprocess.run([sys.executable, "-m", "backtrace", "explain", "--help"],
                               capture_output=True, text=True).stdout
    if "--engine" in help_text:
        engine = ["--engine", "reference"]
    with TemporaryDirectory() as tmp:
        for name, (formula, values) in FORMULAS.items():
            args = [formula, *[f"{k}={v}" for k, v in values.items()], *engine]
            plain = best(lambda: cli("explain", *args))
            svg = best(lambda: cli("explain", *args, "-o", f"{tmp}/g.svg"))
            trace = explain(formula, **values)
            to_dot = best(lambda: to_graphviz(trace).source, 20)
            source = to_graphviz(trace).source
            layout = best(lambda: run_dot(source, "svg"), 10)
            print(f"{name:<28} {plain:>8.3f} {svg:>17.3f} {to_dot:>11.4f} {layout:>9.3f}")


def torch_traces():
    """(name, trace) for a transformer block, a 12- and a 48-layer model, from backtrace.tracer."""
    return [(name, traced.transformer(layers)) for name, layers in (
        ("transformer block", 1), ("12-layer transformer", 12), ("48-layer transformer", 48))]


def time_dot(binary: str | None, source: str, timeout: float) -> str:
    try:
        t0 = time.perf_counter()
        run_dot(source, "svg", dot=binary, timeout=timeout)
        return f"{time.perf_counter() - t0:.2f}"
    except RenderError:
        return f">{timeout:g}"


def models(system_dot: bool, timeout: float) -> None:
    try:
        traces = torch_traces()
    except ImportError as exc:
        print(f"(torch traces skipped: {exc})")
        return
    print("\nTorch traces: seconds (one run each)")
    head = f"{'trace':<22} {'nodes':>6} {'boxes':>6} {'fold+DOT':>9} {'SVG folded':>11} {'SVG unfolded':>13}"
    dot = shutil.which("dot") if system_dot else None
    if dot:
        head += f" {'system dot unfolded':>20}"
    print(head)
    for name, trace in traces:
        t0 = time.perf_counter()
        folded = fold(trace)
        source = to_graphviz(folded).source
        prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_dot(source, "svg")
        folded_svg = time.perf_counter() - t0
        full = to_graphviz(trace, folding=False).source
        line = (f"{name:<22} {len(trace.nodes):>6} {len(folded.nodes):>6} {prep:>9.3f} "
                f"{prep + folded_svg:>11.2f} {time_dot(None, full, timeout):>13}")
        if dot:
            line += f" {time_dot(dot, full, timeout):>20}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system-dot", action="store_true", help="also time `dot` from PATH")
    parser.add_argument("--timeout", type=float, default=300.0, help="cap per unfolded layout")
    args = parser.parse_args()
    print(f"embedded engine: {embedded_binary()}")
    formulas()
    models(args.system_dot, args.timeout)


if __name__ == "__main__":
    main()
