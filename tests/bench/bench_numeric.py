"""`--check numeric` (backtrace.numeric.numeric_check) on big formulas of three shapes: seconds per
size, how many nodes were checked, and the growth from one size to the next (linear: 2x per doubling).

Run: python tests/bench/bench_numeric.py [--sizes 6000,12000,24000,48000] [--repeats 3]
                                         [--against DIR] [--against-max 12000]
Medians of interleaved runs, each after gc.collect(); the reference engine's trace is made first and
not timed. Target: a 24k-node formula in at most 2 s, linear in the node count.

- chain: y = tanh(y) + x_k, an RNN-like chain with an input every three nodes: every node's cone
  (what a perturbation re-runs) reaches to the output, so checking all of them would be quadratic.
- tree: tanh(x_k) summed by a balanced tree: cones as short as the tree is deep.
- wide sum: x_1*w_1 + x_2*w_2 + ... written left to right, as a formula writes a long sum: the
  terms' cones are the rest of the sum.
--against DIR also times DIR/backtrace's numeric_check (another checkout, loaded as a second copy)
up to --against-max nodes (the old one was quadratic).
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable

from backtrace.engine import run
from backtrace.ir import GraphBuilder
from backtrace.numeric import numeric_check


def chain(n: int):
    g, values = GraphBuilder(max_nodes=n + 10), {"x0": 0.3}
    y = g.add("input", name="x0")
    k = 1
    while len(g.nodes) + 3 <= n:
        values[f"x{k}"] = 0.5 * math.sin(k)
        x = g.add("input", name=f"x{k}")
        y = g.add("add", (g.add("tanh", (y,)), x))
        k += 1
    return g.build(y), values


def tree(n: int):
    g, values = GraphBuilder(max_nodes=n + 10), {}
    terms = []
    for k in range(max(1, (n + 1) // 3)):  # x, tanh(x) and one add per term
        values[f"x{k}"] = math.sin(k)
        terms.append(g.add("tanh", (g.add("input", name=f"x{k}"),)))
    while len(terms) > 1:
        terms = [g.add("add", (terms[i], terms[i + 1])) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return g.build(terms[0]), values


def wide_sum(n: int):
    g, values = GraphBuilder(max_nodes=n + 10), {}
    total = None
    for k in range(max(1, n // 4)):  # x, w, x*w and one add per term
        values[f"x{k}"], values[f"w{k}"] = math.sin(k), math.cos(k)
        term = g.add("mul", (g.add("input", name=f"x{k}"), g.add("input", name=f"w{k}")))
        total = term if total is None else g.add("add", (total, term))
    return g.build(total), values


SHAPES: dict[str, Callable] = {"chain": chain, "tree": tree, "wide sum": wide_sum}


def load_before(checkout: str):
    """numeric_check of another checkout, imported as `backtrace_before.numeric`."""
    import importlib
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    shutil.copytree(Path(checkout) / "backtrace", root / "backtrace_before")
    sys.path.insert(0, str(root))
    return importlib.import_module("backtrace_before.numeric").numeric_check


def timed(fn: Callable) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="6000,12000,24000,48000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", metavar="DIR", help="also time DIR/backtrace's numeric_check")
    parser.add_argument("--against-max", type=int, default=12_000)
    args = parser.parse_args()
    before = load_before(args.against) if args.against else None
    sizes = [int(s) for s in args.sizes.split(",")]
    for shape, make in SHAPES.items():
        seconds = {}
        for size in sizes:
            graph, values = make(size)
            trace = run(graph, values)
            contenders = {"now": lambda: numeric_check(graph, values, trace)}
            if before is not None and size <= args.against_max:
                contenders["before"] = lambda: before(graph, values, trace)
            times: dict[str, list[float]] = {name: [] for name in contenders}
            verdicts = {}
            for r in range(args.repeats):
                for name, fn in contenders.items() if r % 2 == 0 else reversed(contenders.items()):
                    t, verdicts[name] = timed(fn)
                    times[name].append(t)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            seconds[size] = med["now"]
            v = verdicts["now"]
            line = (f"{shape:>8} {len(graph.nodes):>7,} nodes  {med['now']:7.3f} s  "
                    f"{v.compared:,} checked, {'agree' if v.agree else 'DISAGREE'}")
            if "before" in med:
                line += f"  (before: {med['before']:.3f} s, {verdicts['before'].compared:,} checked)"
            print(line, flush=True)
        growth = ", ".join(f"{big // 1000}k/{small // 1000}k {seconds[big] / seconds[small]:.2f}x"
                           for small, big in zip(sizes, sizes[1:]))
        print(f"{'':>8} growth: {growth} (linear: {sizes[1] / sizes[0]:.0f}x per step)", flush=True)


if __name__ == "__main__":
    main()
