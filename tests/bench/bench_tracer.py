"""The tracer's cost: forward+backward traced vs untraced, on an MLP and a transformer encoder block.

Run: python tests/bench/bench_tracer.py [--repeats 15]
Prints medians of interleaved runs (untraced, level "stats", level "full", in turn, in one process)
and the ratios to untraced. Targets: stats <= 1.15x, full <= 2.5x (torchlens publishes 13.8x on
ResNet-18, CPU).

- MLP: Linear(1024, 3072) -> ReLU -> Linear(3072, 2048) -> ReLU -> Linear(2048, 10), about 9.4M
  parameters, batch 256, cross-entropy.
- Transformer: nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024), batch 32 of
  128 tokens, MSE to a random target.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch
from torch import nn

import backtrace


def mlp_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 3072), nn.ReLU(), nn.Linear(3072, 2048), nn.ReLU(),
                          nn.Linear(2048, 10))
    x, y = torch.randn(256, 1024), torch.randint(0, 10, (256,))
    return model, lambda: nn.functional.cross_entropy(model(x), y)


def transformer_case():
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024, dropout=0.0,
                                       batch_first=True)
    x, target = torch.randn(32, 128, 256), torch.randn(32, 128, 256)
    return model, lambda: nn.functional.mse_loss(model(x), target)


def once(model, loss_fn, level: str | None) -> float:
    model.zero_grad(set_to_none=True)
    gc.collect()
    start = time.perf_counter()
    if level is None:
        loss_fn().backward()
    else:
        with backtrace.trace(model=model, level=level) as t:
            loss_fn().backward()
        assert len(t.trace.steps) > 0
    return time.perf_counter() - start


def bench(name: str, make, repeats: int) -> dict[str, float]:
    model, loss_fn = make()
    params = sum(p.numel() for p in model.parameters())
    for level in (None, "stats", "full"):  # warm-up: allocator, kernels, first-call caches
        once(model, loss_fn, level)
    times: dict[str | None, list[float]] = {None: [], "stats": [], "full": []}
    for _ in range(repeats):
        for level in times:
            times[level].append(once(model, loss_fn, level))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{name} ({params / 1e6:.1f}M parameters): untraced {med[None] * 1e3:.1f} ms, "
          f"stats {med['stats'] * 1e3:.1f} ms ({med['stats'] / med[None]:.2f}x), "
          f"full {med['full'] * 1e3:.1f} ms ({med['full'] / med[None]:.2f}x)")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of "
          f"{args.repeats} interleaved runs")
    bench("MLP, batch 256", mlp_case, args.repeats)
    bench("Transformer encoder block, 32×128 tokens", transformer_case, args.repeats)


if __name__ == "__main__":
    main()
