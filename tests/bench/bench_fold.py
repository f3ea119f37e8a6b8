"""Benchmark: fold + DOT + SVG of big torch traces, the default picture `backtrace render` draws.

The traces are a TransformerEncoder traced by backtrace.trace (3 layers, d_model 16), its layers
then repeated to 16k and 100k nodes (every copy wired to the one before, ids, module paths and
steps renamed), because tracing 100k nodes for real takes minutes and is not what is measured.
Each size is timed in turns with the others (interleaved), medians of --repeats runs, and the
time per node says whether it grows linearly.

Run: python tests/bench/bench_fold.py [--repeats 3] [--sizes 4000,16000,100000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backtrace.render.draw import draw  # noqa: E402
from backtrace.traces import Edge, Step, Trace, TraceNode  # noqa: E402


def base_trace() -> Trace:
    import torch
    from torch import nn

    import backtrace

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    x = torch.randn(2, 5, 16, requires_grad=True)
    with backtrace.trace(model=model, names={"x": x}) as t:
        model(x).pow(2).mean().backward()
    return t.trace


def _layer(n: TraceNode) -> int | None:
    parts = n.module.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "layers" and parts[1].isdigit() else None


def repeat_layers(trace: Trace, layers: int) -> Trace:
    """The 3-layer trace with `layers` layers: copies of layer 1, each fed like layer 2 is fed."""
    by_layer: dict[int | None, list[TraceNode]] = {0: [], 1: [], 2: [], None: []}
    for n in trace.nodes:
        by_layer[_layer(n)].append(n)
    one, two = by_layer[1], by_layer[2]
    assert [n.op for n in one] == [n.op for n in two], "layers 1 and 2 must have one structure"
    pos1 = {n.id: j for j, n in enumerate(one)}
    pos2 = {n.id: j for j, n in enumerate(two)}

    def ident(j: int, k: int) -> str:  # node j of layer k >= 1
        old = one[j].id
        if k == 1:
            return old
        return old.replace("layers.1.", f"layers.{k}.") if old.startswith("layers.1.") else f"{old}~{k}"

    def ref(i: str, k: int) -> str:  # what input i of layer 2's template means in copy k
        if i in pos2:
            return ident(pos2[i], k)
        if i in pos1:
            return ident(pos1[i], k - 1)
        return i

    def copy(n: TraceNode, j: int, k: int, template: TraceNode) -> TraceNode:
        meta = dict(n.meta)
        for key in ("module", "name"):
            if isinstance(meta.get(key), str):
                meta[key] = meta[key].replace("layers.1", f"layers.{k}", 1)
        inputs = n.inputs if k == 1 else tuple(ref(i, k) for i in template.inputs)
        return TraceNode(ident(j, k), n.op, inputs, n.expr, n.value, n.grad, n.kind, meta)

    last = layers - 1
    outside = {i: ident(pos2[i], last) for i in pos2}  # the suffix reads the last layer
    nodes = [n for n in trace.nodes if _layer(n) in (None, 0) and not _after(n, trace)]
    for k in range(1, layers):
        nodes += [copy(n, j, k, two[j]) for j, n in enumerate(one)]
    nodes += [TraceNode(n.id, n.op, tuple(outside.get(i, i) for i in n.inputs), n.expr, n.value,
                        n.grad, n.kind, n.meta) for n in trace.nodes if _after(n, trace)]
    steps = []
    for s in trace.steps:
        where = _layer(trace.node(s.node))
        if where == 1:
            continue
        copies = [(None, None)] if where != 2 else [(pos2[s.node], k) for k in range(last, 0, -1)]
        for j, k in copies:
            node = s.node if k is None else ident(j, k)
            edges = tuple(Edge(e.slot, outside.get(e.input, e.input) if k is None else
                               ref(e.input, k) if k > 1 else
                               (ident(pos2[e.input], 1) if e.input in pos2 else e.input),
                               e.local, e.rule, e.contribution, e.note) for e in s.edges)
            steps.append(Step(len(steps), node, s.upstream, edges, s.meta))
    return Trace(trace.engine, trace.output, tuple(nodes), tuple(steps), trace.meta)


def _after(n: TraceNode, trace: Trace) -> bool:
    """Outside the layers and after them (the loss)."""
    if _layer(n) is not None:
        return False
    index = [m.id for m in trace.nodes].index(n.id)
    first_layer = next(i for i, m in enumerate(trace.nodes) if _layer(m) is not None)
    return index > first_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="4000,16000,100000", help="node counts, comma-separated")
    args = parser.parse_args()
    base = base_trace()
    per_layer = sum(_layer(n) == 1 for n in base.nodes)
    traces = {}
    for size in map(int, args.sizes.split(",")):
        t = repeat_layers(base, max(3, round((size - len(base.nodes)) / per_layer) + 3))
        traces[len(t.nodes)] = t
    times: dict[int, list[float]] = {n: [] for n in traces}
    for _ in range(args.repeats):
        for n, t in traces.items():  # interleaved
            t0 = time.perf_counter()
            svg = draw(t, "svg")
            times[n].append(time.perf_counter() - t0)
            assert b"blocks of the same structure" in svg
    print(f"fold + DOT + SVG (embedded engine), median of {args.repeats} interleaved runs")
    print(f"{'nodes':>8} {'seconds':>8} {'µs per node':>12}")
    for n, ts in times.items():
        med = statistics.median(ts)
        print(f"{n:>8,} {med:>8.2f} {med / n * 1e6:>12.1f}")


if __name__ == "__main__":
    main()
