"""Lecture 4, section 4.2: f(x, y, z) = (x + y) * z at x = -2, y = 5, z = -4, backpropagated.

Run: python examples/chain_rule.py
The same numbers on the command line: backtrace explain "q = x + y; f = q * z" --x -2 --y 5 --z -4
"""
from rich.console import Console

import backtrace

console = Console()

# 1. From a formula: every forward value, every backward step, every chain-rule product.
trace = backtrace.explain("q = x + y; f = q * z", x=-2, y=5, z=-4)
console.print(backtrace.view(trace, "table"))

# 2. The lecture's pattern, "gradient_x = local_gradient x upstream_gradient", read off the trace.
for step in trace.steps:
    for edge in step.edges:
        console.print(f"at {step.node}: ∂{step.node}/∂{edge.input} = {edge.rule} = {edge.local:g}; "
                      f"{edge.local:g} × upstream {step.upstream:g} = {edge.contribution:g} sent to {edge.input}")

# 3. The same graph built in Python with the micrograd-style Value.
x, y, z = backtrace.Value(-2.0, "x"), backtrace.Value(5.0, "y"), backtrace.Value(-4.0, "z")
f = (x + y) * z
f.backward()
console.print(f"Value API: f = {f.data:g}, ∂f/∂x = {x.grad:g}, ∂f/∂y = {y.grad:g}, ∂f/∂z = {z.grad:g}")
