"""backtrace.Value and the reference engine vs micrograd: build, backward, and both together.

Run: python tests/bench/bench_engine.py [--pairs 100000] [--sizes 1000000] [--repeats 3]
                                        [--gc both|collect|none] [--clock wall|cpu] [--against DIR]
Needs `pip install micrograd` (it is in the test extra). Prints medians of interleaved runs (the
contenders take turns, in both orders) and the ratios, for each graph:

- pairs: `--pairs` K products relu(x*w) of fresh inputs, summed by a balanced tree (5K - 1 nodes;
  100k pairs is 499,999 nodes).
- neurons: `--sizes` N nodes of neurons relu(w*x + b) sharing one bias, summed by a balanced tree.

Both trees are shallow, so micrograd's recursive topological sort does not hit the recursion limit.
Contenders:
- micrograd: its Value builds the graph (its forward pass), then its .backward(), as shipped.
- backtrace Value: the same with backtrace.Value, the micrograd-style API.
- backtrace engine: forward + backward over the prebuilt flat IR, recording every step (the Trace).

Each run times the build and the backward separately; "together" is the two back to back. The graph
is dropped after the clock stops. micrograd's graphs are reference cycles (each closure refers to
its node), which only the cycle collector frees, and the collector's passes grow with the heap:
with `--gc collect` every run starts after gc.collect() (the garbage of earlier runs does not land
on anyone's clock); with `--gc none` nobody collects, so micrograd's garbage is paid for where the
collector happens to run, as in a training loop. `--gc both` (the default) prints both.
--clock cpu reads this process's CPU time instead of the wall clock: steadier on a shared machine.
--against DIR also times the backtrace Value of another checkout (DIR/backtrace, loaded as a second
copy) in the same interleaved loop: a before/after measurement of a change.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable

from backtrace.engine import run
from backtrace.value import Value, to_graph


def tree_sum(terms: list):
    """Sum by a balanced tree, pairing neighbours level by level."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def pairs(leaf: Callable, k: int, seed: int = 0):
    """K products relu(x*w), summed: 5K - 1 nodes."""
    rng = random.Random(seed)
    return tree_sum([(leaf(rng.uniform(-1, 1)) * leaf(rng.uniform(-1, 1))).relu()
                     for _ in range(k)])


def neurons(leaf: Callable, k: int, seed: int = 0):
    """K neurons relu(w*x + b) sharing b, summed: 6K nodes."""
    rng = random.Random(seed)
    b = leaf(0.1)
    return tree_sum([(leaf(rng.uniform(-1, 1)) * leaf(rng.uniform(-1, 1)) + b).relu()
                     for _ in range(k)])


SHAPES = {"pairs": (pairs, "relu(x*w) pairs"), "neurons": (neurons, "neurons relu(w*x + b)")}


def flat_graph(shape: Callable, k: int):
    """The same graph as the flat IR the engine runs, with its input values."""
    values: dict[str, float] = {}

    def leaf(x: float) -> Value:
        name = f"i{len(values)}"
        values[name] = x
        return Value(x, name)

    return to_graph(shape(leaf, k)), values


class Clock:
    """One contender's build and backward times, one pair per run."""

    def __init__(self, name: str, build: Callable | None, backward: Callable) -> None:
        self.name, self.build, self.backward = name, build, backward
        self.times: dict[str, list[float]] = {"build": [], "backward": [], "together": []}

    def run(self, collect: bool, clock: Callable[[], float]) -> None:
        if collect:
            gc.collect()
        start = clock()
        graph = self.build() if self.build else None
        built = clock()
        self.backward(graph)
        done = clock()
        del graph  # freed after the clock stops (micrograd's cycles wait for the collector)
        self.times["build"].append(built - start)
        self.times["backward"].append(done - built)
        self.times["together"].append(done - start)

    def median(self, what: str) -> float:
        return statistics.median(self.times[what])


def load_before(checkout: str):
    """The backtrace Value of another checkout, imported as `backtrace_before.value.Value`."""
    import importlib
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())
    shutil.copytree(Path(checkout) / "backtrace", root / "backtrace_before")
    sys.path.insert(0, str(root))
    return importlib.import_module("backtrace_before.value").Value


def clocks(shape: Callable, k: int, before) -> list[Clock]:
    from micrograd.engine import Value as MicroValue

    graph, values = flat_graph(shape, k)
    found = [Clock("micrograd", lambda: shape(MicroValue, k), lambda g: g.backward()),
             Clock("backtrace Value", lambda: shape(Value, k), lambda g: g.backward()),
             Clock("backtrace engine", None, lambda _: run(graph, values))]
    if before is not None:
        found.append(Clock("Value before", lambda: shape(before, k), lambda g: g.backward()))
    return found


def bench(name: str, k: int, collect: bool, repeats: int, before, clock) -> dict[str, Clock]:
    shape, title = SHAPES[name]
    contenders = clocks(shape, k, before)
    for r in range(repeats):  # interleaved, so load drifts hit every contender alike,
        for contender in contenders if r % 2 == 0 else contenders[::-1]:  # in both orders
            contender.run(collect, clock)
    by_name = {c.name: c for c in contenders}
    nodes = 5 * k - 1 if name == "pairs" else 6 * k
    gc_note = "gc.collect() before each run" if collect else "no gc.collect() between runs"
    print(f"\n{nodes:,} nodes: {k:,} {title}, tree sum; {gc_note}; "
          f"medians of {repeats} interleaved runs{'' if clock is time.perf_counter else ', CPU time'}")
    print(f"  {'':<17}{'build':>9} {'backward':>9} {'together':>9}")
    for c in contenders:
        build = f"{c.median('build'):8.3f}s" if c.build else f"{'':>9}"
        print(f"  {c.name:<17}{build} {c.median('backward'):8.3f}s {c.median('together'):8.3f}s"
              + ("   (forward + backward of the flat IR, every step recorded)" if not c.build else ""))
    micro = by_name["micrograd"]
    for c in contenders[1:]:
        parts = [f"{micro.median(w) / c.median(w):.2f}x {w}" for w in ("build", "backward")
                 if c.build] + [f"{micro.median('together') / c.median('together'):.2f}x together"]
        print(f"  {c.name} vs micrograd: {', '.join(parts)} (above 1: faster)")
    if before is not None:
        now, old = by_name["backtrace Value"], by_name["Value before"]
        print("  Value now vs before: " + ", ".join(
            f"{old.median(w) / now.median(w):.2f}x {w}" for w in ("build", "backward", "together")))
    return by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="100000", help="pairs per pairs graph, comma-separated")
    parser.add_argument("--sizes", default="1000000", help="nodes per neurons graph, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gc", choices=("both", "collect", "none"), default="both")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--against", metavar="DIR", help="also time DIR/backtrace's Value (before)")
    args = parser.parse_args()
    before = load_before(args.against) if args.against else None
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    sys.setrecursionlimit(100_000)
    cases = [("pairs", int(k)) for k in args.pairs.split(",") if k] + \
            [("neurons", max(1, int(n) // 6)) for n in args.sizes.split(",") if n]
    for collect in {"both": (True, False), "collect": (True,), "none": (False,)}[args.gc]:
        rows = {}
        for name, k in cases:
            rows[name, k] = bench(name, k, collect, args.repeats, before, clock)
        for (name, small), (same, big) in zip(cases, cases[1:]):
            if name == same:
                growth = {c: rows[name, big][c].median("together") / rows[name, small][c].median("together")
                          for c in ("backtrace Value", "backtrace engine")}
                print(f"growth {name} {big:,}/{small:,}: Value {growth['backtrace Value']:.1f}x, engine "
                      f"{growth['backtrace engine']:.1f}x (linear would be {big / small:.0f}x)")


if __name__ == "__main__":
    main()
