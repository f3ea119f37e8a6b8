"""One transformer encoder block, traced: which nodes of attention and the MLP pass gradient on.

Run:  python examples/transformer_block.py
Prints the backward table of the block's attention sub-module, then the gradient reaching each
parameter, grouped by module.
"""
from __future__ import annotations

import torch
from torch import nn

import backtrace


def main() -> None:
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                       batch_first=True)
    tokens = torch.randn(4, 10, 32)  # 4 sequences of 10 tokens
    target = torch.randn(4, 10, 32)

    with backtrace.trace(model=block, names={"tokens": tokens}) as t:
        out = block(tokens)
        loss = nn.functional.mse_loss(out, target)
        loss.backward()

    trace = t.trace
    backtrace.show(trace, "plain", module="self_attn")
    modules: dict[str, float] = {}
    for name, g in trace.grads.items():  # level "stats": each gradient's norm, no tensor kept
        module = trace.node(name).module
        modules[module] = modules.get(module, 0.0) + g.norm ** 2
    print("\ngradient norm per module:")
    for module, sq in sorted(modules.items()):
        print(f"  {module or '(block)':<24} {sq ** 0.5:.6f}")
    ops = sorted({n.op for n in trace.nodes if n.kind == "op"})
    print(f"\n{len(trace.nodes)} nodes, {len(trace.steps)} backward steps; ops: {', '.join(ops)}")


if __name__ == "__main__":
    main()
