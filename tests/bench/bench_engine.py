"""Reference engine vs micrograd: forward+backward with tracing on, at 10k / 100k / 1M nodes.

Run: python tests/bench/bench_engine.py [--sizes 10000,100000,1000000] [--repeats 3] [--against DIR]
Needs `pip install micrograd`. Prints medians of interleaved runs and the ratios.
--against DIR also times the backtrace package of another checkout (DIR/backtrace, loaded as a
second copy) in the same interleaved loop: a before/after measurement of a change.

The graph is the same for every contender: n/6 neurons relu(w*x + b) summed by a balanced tree (a
shallow tree, so micrograd's recursive topological sort does not hit the recursion limit).
- micrograd: building the graph with its Value (that is its forward pass) and .backward(), as shipped.
- backtrace engine: forward + backward of the prebuilt flat graph, recording every step (the Trace).
- backtrace Value: building with backtrace.Value and .backward(), the micrograd-style API.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time

from backtrace.engine import run
from backtrace.ir import GraphBuilder
from backtrace.value import Value


def neurons(n_nodes: int) -> int:
    return max(1, n_nodes // 6)  # per neuron: w, x, mul, add, relu and one tree add


def build_values(V, k: int, seed: int = 0):
    rng = random.Random(seed)
    b = V(0.1)
    terms = [(V(rng.uniform(-1, 1)) * V(rng.uniform(-1, 1)) + b).relu() for _ in range(k)]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def build_graph(k: int, seed: int = 0, builder=GraphBuilder):
    rng = random.Random(seed)
    g = builder(max_nodes=10**8)
    values = {"b": 0.1}
    bias = g.add("input", name="b")
    terms = []
    for i in range(k):
        w, x = g.add("input", name=f"w{i}"), g.add("input", name=f"x{i}")
        values[f"w{i}"], values[f"x{i}"] = rng.uniform(-1, 1), rng.uniform(-1, 1)
        terms.append(g.add("relu", (g.add("add", (g.add("mul", (w, x)), bias)),)))
    while len(terms) > 1:
        terms = [g.add("add", (terms[i], terms[i + 1])) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return g.build(terms[0]), values


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    gc.collect()  # every contender starts with a clean heap
    return elapsed


def load_before(checkout: str):
    """The backtrace package of another checkout, imported as `backtrace_before`."""
    import importlib
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    shutil.copytree(Path(checkout) / "backtrace", root / "backtrace_before")
    sys.path.insert(0, str(root))
    return (importlib.import_module("backtrace_before.engine"),
            importlib.import_module("backtrace_before.ir"),
            importlib.import_module("backtrace_before.value"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", metavar="DIR", help="also time DIR/backtrace (before)")
    args = parser.parse_args()
    from micrograd.engine import Value as MicroValue

    before = load_before(args.against) if args.against else None
    sys.setrecursionlimit(100_000)
    rows = {}
    for size in map(int, args.sizes.split(",")):
        k = neurons(size)
        graph, values = build_graph(k)
        times = {"micrograd": [], "engine": [], "value": []}
        if before:
            old_graph, _ = build_graph(k, builder=before[1].GraphBuilder)
            times.update({"engine before": [], "value before": []})
        contenders = [("micrograd", lambda: build_values(MicroValue, k).backward()),
                      ("engine", lambda: run(graph, values)),
                      ("value", lambda: build_values(Value, k).backward())]
        if before:
            contenders += [("engine before", lambda: before[0].run(old_graph, values)),
                           ("value before", lambda: build_values(before[2].Value, k).backward())]
        for r in range(args.repeats):  # interleaved, so load drifts hit every contender alike,
            for name, fn in contenders if r % 2 == 0 else contenders[::-1]:  # in both orders
                times[name].append(timed(fn))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rows[size] = med
        print(f"{len(graph.nodes):>9,} nodes  micrograd {med['micrograd']:7.3f}s  "
              f"backtrace engine {med['engine']:7.3f}s ({med['micrograd'] / med['engine']:5.1f}x faster)  "
              f"backtrace Value {med['value']:7.3f}s ({med['micrograd'] / med['value']:5.1f}x faster)",
              flush=True)
        if before:
            print(f"{'':>15}before: engine {med['engine before']:7.3f}s (now {med['engine'] / med['engine before']:.3f}x "
                  f"its time)  Value {med['value before']:7.3f}s (now "
                  f"{med['value'] / med['value before']:.3f}x its time)", flush=True)
    sizes = sorted(rows)
    for small, big in zip(sizes, sizes[1:]):
        print(f"growth {big:,}/{small:,} nodes: engine {rows[big]['engine'] / rows[small]['engine']:.1f}x, "
              f"Value {rows[big]['value'] / rows[small]['value']:.1f}x "
              f"(linear would be {big / small:.0f}x)")


if __name__ == "__main__":
    main()
