"""Reference engine vs micrograd: forward+backward with tracing on, at 10k / 100k / 1M nodes.

Run: python tests/bench/bench_engine.py [--sizes 10000,100000,1000000] [--repeats 3]
Needs `pip install micrograd`. Prints medians of interleaved runs and the ratios.

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


def build_graph(k: int, seed: int = 0):
    rng = random.Random(seed)
    g = GraphBuilder(max_nodes=10**8)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from micrograd.engine import Value as MicroValue

    sys.setrecursionlimit(100_000)
    rows = {}
    for size in map(int, args.sizes.split(",")):
        k = neurons(size)
        graph, values = build_graph(k)
        times = {"micrograd": [], "engine": [], "value": []}
        for _ in range(args.repeats):  # interleaved, so load drifts hit every contender alike
            times["micrograd"].append(timed(lambda: build_values(MicroValue, k).backward()))
            times["engine"].append(timed(lambda: run(graph, values)))
            times["value"].append(timed(lambda: build_values(Value, k).backward()))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        rows[size] = med
        print(f"{len(graph.nodes):>9,} nodes  micrograd {med['micrograd']:7.3f}s  "
              f"backtrace engine {med['engine']:7.3f}s ({med['micrograd'] / med['engine']:5.1f}x faster)  "
              f"backtrace Value {med['value']:7.3f}s ({med['micrograd'] / med['value']:5.1f}x faster)",
              flush=True)
    sizes = sorted(rows)
    for small, big in zip(sizes, sizes[1:]):
        print(f"growth {big:,}/{small:,} nodes: engine {rows[big]['engine'] / rows[small]['engine']:.1f}x, "
              f"Value {rows[big]['value'] / rows[small]['value']:.1f}x "
              f"(linear would be {big / small:.0f}x)")


if __name__ == "__main__":
    main()
