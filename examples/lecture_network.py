"""Lecture 4, sections 1, 2 and 6: the sample [1.4, 2.7, 1.9] through Linear -> ReLU -> Linear ->
Softmax -> cross-entropy with target 0, every gradient shown, then one gradient-descent step.

Run: python examples/lecture_network.py
The same on the command line (the formula in a file, the values as lists):
    backtrace explain -f network.txt --x "[1.4, 2.7, 1.9]" --W1 "[[0.2, -0.5, 0.1, 0.4], ...]" ...
"""
from rich.console import Console

import backtrace
from backtrace.crosscheck import crosscheck

NETWORK = """
h = relu(x @ W1 + b1)
z = h @ W2 + b2
p = softmax(z)
L = cross_entropy(z, y)
"""
VALUES = {
    "x": [1.4, 2.7, 1.9],  # the lecture's sample
    "W1": [[0.2, -0.5, 0.1, 0.4], [-0.3, 0.8, 0.2, -0.1], [0.5, 0.1, -0.6, 0.3]],  # 3 -> 4
    "b1": [0.1, 0.0, -0.1, 0.2],
    "W2": [[0.3, -0.2, 0.1], [-0.4, 0.5, 0.2], [0.6, -0.1, -0.3], [0.2, 0.3, -0.5]],  # 4 -> 3
    "b2": [0.0, 0.1, -0.1],
    "y": 0,  # the target class
}
LR = 0.1
PARAMETERS = ("W1", "b1", "W2", "b2")

console = Console(width=max(Console().width, 100))

# 1. Forward and backward, number by number; torch (float64) runs the same graph as a check.
result = crosscheck(NETWORK, VALUES)
trace = result.trace
backtrace.show(trace, "table" if console.is_terminal else "plain")
console.print(result.verdicts[0].line(), highlight=False)

# 2. What the course writes, read off the trace: ∂L/∂z = softmax(z) − onehot(y), ∂L/∂W2 = hᵀ · g.
p = trace.node("p").value
print(f"\nprobabilities p = softmax(z) = {[round(v, 4) for v in p]}, target class 0, "
      f"loss L = -log(p[0]) = {trace.value:.6f}")
print(f"∂L/∂z = p − onehot(0) = {[round(v, 4) for v in trace.node('z').grad]}")

# 3. One step of gradient descent: W = W − α·∂L/∂W, for every weight and bias.
def step(value, grad):
    if isinstance(value, list):
        return [step(v, g) for v, g in zip(value, grad)]
    return value - LR * grad


updated = {**VALUES, **{k: step(VALUES[k], trace.grads[k]) for k in PARAMETERS}}
after = backtrace.explain(NETWORK, **updated)
print(f"\nOne step, W = W − {LR}·∂L/∂W:")
for k in PARAMETERS:
    print(f"  {k} = {backtrace.values.nested_text(updated[k], 4)}")
print(f"loss {trace.value:.6f} -> {after.value:.6f}; "
      f"p[0] {p[0]:.4f} -> {after.node('p').value[0]:.4f}")
