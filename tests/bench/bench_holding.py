"""What holding node objects (tracer/holding.py) and filing nodes by creation number cost.

Run: python tests/bench/bench_holding.py [--repeats 15]
Prints, from one process: the traced forward of a 1,000-op chain with holding and filing on and
off (interleaved runs, CPU-time medians, the ratio), and the time a sweep takes per held node when
a dropped 2,000-step RNNCell graph (walked by its traced backward) is let go.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import backtrace
from backtrace.tracer import holding, stamping


def chain(steps: int = 500) -> torch.Tensor:
    y = torch.ones(8, requires_grad=True)
    for _ in range(steps):
        y = (y * 1.0001).tanh()
    return y


def forward_ratio(repeats: int) -> tuple[float, float]:
    """Median CPU seconds of the traced 1,000-op forward with and without holding and filing."""
    real = holding.hold, stamping.Forward.settle, stamping.Forward._call_starts
    off = (lambda n: n, lambda self, nodes, inside=None: None, lambda self: None)
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(repeats):
            for on in (True, False):
                holding.hold, stamping.Forward.settle, stamping.Forward._call_starts = \
                    real if on else off
                start = time.process_time()
                with backtrace.trace(local_max=0):
                    out = chain()
                times[on].append(time.process_time() - start)
                del out
    finally:
        holding.hold, stamping.Forward.settle, stamping.Forward._call_starts = real
    return statistics.median(times[True]), statistics.median(times[False])


def sweep_cost(steps: int = 2_000) -> tuple[int, float]:
    """Nodes let go and seconds taken by the sweep that frees a dropped traced RNNCell graph."""
    cell, x = torch.nn.RNNCell(4, 8), torch.randn(1, 4)
    with backtrace.trace(model=cell, local_max=0):
        h = torch.zeros(1, 8)
        for _ in range(steps):
            h = cell(x, h)
        h.sum().backward()  # the walk gives every node of the chain a Python object
    del h
    start = time.perf_counter()
    freed = holding.sweep()
    return freed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    on, off = forward_ratio(args.repeats)
    print(f"traced forward, 1,000 ops: holding+filing on {on * 1e3:.1f} ms, off {off * 1e3:.1f} ms "
          f"CPU ({on / off:.3f}x, {(on - off) / 1000 * 1e6:+.1f} µs per op)")
    freed, seconds = sweep_cost()
    print(f"sweep of a dropped 2,000-step RNNCell graph: {freed:,} nodes in {seconds * 1e3:.1f} ms "
          f"({seconds / max(freed, 1) * 1e6:.2f} µs per node)")


if __name__ == "__main__":
    main()
