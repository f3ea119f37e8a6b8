"""check_function over every way a custom autograd.Function is called (the class, `.apply`, an
alias taken earlier, a lambda, a module using it) × both Function styles (old-style `forward(ctx,
...)` and `setup_context`) × each kind of broken backward (right, wrong sign, swapped inputs,
missing factor): every broken one fails naming the custom node and the input slot, and no check
reports a slot it did not check."""
from __future__ import annotations

import re

import pytest
import torch

from backtrace.testing import check_function

# f(a, b) = a² · b, elementwise: ∂f/∂a = 2ab, ∂f/∂b = a².
BACKWARDS = {
    "right": lambda a, b, g: (2 * a * b * g, a * a * g),
    "wrong sign": lambda a, b, g: (2 * a * b * g, -a * a * g),  # slot 1 (b) has the wrong sign
    "swapped inputs": lambda a, b, g: (a * a * g, 2 * a * b * g),  # first wrong slot: 0 (a)
    "missing factor": lambda a, b, g: (a * b * g, a * a * g),  # slot 0 (a) lost its factor 2
}
WRONG_SLOT = {"wrong sign": (1, "b"), "swapped inputs": (0, "a"), "missing factor": (0, "a")}


def old_style(bug: str) -> type:
    """A Function whose forward takes ctx first."""
    back = BACKWARDS[bug]

    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * a * b

    def backward(ctx, g):
        return back(*ctx.saved_tensors, g)

    name = "ASqB" + bug.title().replace(" ", "")
    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward)})


def setup_context_style(bug: str) -> type:
    """A Function with forward(a, b) and a separate setup_context (functorch-compatible)."""
    back = BACKWARDS[bug]

    def forward(a, b):
        return a * a * b

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def backward(ctx, g):
        return back(*ctx.saved_tensors, g)

    name = "CtxASqB" + bug.title().replace(" ", "")
    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
                 "backward": staticmethod(backward)})


STYLES = {"old-style": old_style, "setup_context": setup_context_style}
FUNCTIONS = {(style, bug): make(bug) for style, make in STYLES.items() for bug in BACKWARDS}
# Aliases taken now, long before check_function starts recording (as a module would at import).
ALIASES = {key: fn.apply for key, fn in FUNCTIONS.items()}


class UsesIt(torch.nn.Module):
    """A module whose forward applies the Function through an alias, between two torch ops."""

    def __init__(self, apply) -> None:
        super().__init__()
        self.apply_fn = apply

    def forward(self, a, b):
        return torch.sin(self.apply_fn(a * 1.5, b)).sum()


def form(name: str, fn: type, alias):
    """The thing handed to check_function, in each way people write it."""
    return {
        "class": lambda: fn,
        ".apply": lambda: fn.apply,
        "alias": lambda: alias,
        "lambda": lambda: (lambda a, b: fn.apply(a, b)),
        "module": lambda: UsesIt(alias),
    }[name]()


FORMS = ("class", ".apply", "alias", "lambda", "module")
CASES = [(f, s, b) for f in FORMS for s in STYLES for b in BACKWARDS]


def inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, generator=g) + 0.5, torch.randn(2, 3, generator=g)


@pytest.mark.parametrize("form_name, style, bug", CASES,
                         ids=[f"{f}-{s}-{b.replace(' ', '_')}" for f, s, b in CASES])
def test_every_form_and_style_is_checked_at_the_custom_node(form_name, style, bug):
    fn = FUNCTIONS[style, bug]
    target = form(form_name, fn, ALIASES[style, bug])
    node = f"{fn.__name__}Backward"
    if bug == "right":
        report = check_function(target, *inputs())
        custom = [r for r in report.rows if r.node == node]
        # The custom node itself is checked, once per input slot, and every row names its input.
        assert [r.slot for r in custom] == [0, 1] and all(r.ok for r in custom)
        assert all(r.input and "?" not in r.input for r in report.rows)
        # The check compared real numbers: the backward is the true vector-Jacobian product.
        assert all(r.max_delta < 1e-6 for r in custom)
        return
    slot, name = WRONG_SLOT[bug]
    with pytest.raises(AssertionError) as info:
        check_function(target, *inputs())
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"backward of {node} ({fn.__name__}.apply("), first
    expected_input = name if form_name != "module" else ("MulBackward0" if slot == 0 else "b")
    assert re.search(rf"is wrong at input slot {slot} \({re.escape(expected_input)}\): ", first), first
    assert "?" not in str(info.value)


# ---------------------------------------------------------------- edges of the recorder

class Identity(torch.autograd.Function):
    """Returns its input unchanged: torch wraps it in a view (view_as) after forward returns."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return g * 2  # wrong: the derivative of the identity is 1


class IdentityRight(Identity):
    @staticmethod
    def backward(ctx, g):
        return g


@pytest.mark.parametrize("target", [Identity, lambda x: Identity.apply(x).sin().sum(),
                                    lambda x: torch.cos(Identity.apply(x * 1.0)).sum()],
                         ids=["class", "leaf input", "inner input"])
def test_a_forward_returning_its_input_is_checked_at_the_custom_node(target):
    with pytest.raises(AssertionError) as info:
        check_function(target, torch.tensor([0.5, -1.0, 2.0]))
    first = str(info.value).splitlines()[0]
    assert first.startswith("backward of IdentityBackward (Identity.apply(")
    m = re.search(r"input slot 0 \((\w+)\): worst at element \[\d\]: numeric \[(.*)\], "
                  r"backward \[(.*)\]", first)
    assert m and m.group(1) in ("x", "MulBackward0")
    numeric = [float(v) for v in m.group(2).split(", ")]
    backward = [float(v) for v in m.group(3).split(", ")]
    assert backward == pytest.approx([2 * v for v in numeric], rel=1e-5)  # the factor 2, seen
    report = check_function(lambda x: IdentityRight.apply(x * 1.0).sin().sum(),
                            torch.tensor([0.5, -1.0]))
    rows = {(r.node, r.call, r.input) for r in report.rows}
    assert ("IdentityRightBackward", "IdentityRight.apply(MulBackward0)", "MulBackward0") in rows
    assert ("SinBackward0", "Tensor.sin(IdentityRightBackward)", "IdentityRightBackward") in rows


def test_in_place_ops_are_checked_at_their_own_node_and_input_value():
    def f(x):
        y = x * 1.5
        y.sigmoid_()  # derivative σ(y)(1-σ(y)) at y = 1.5x, not at σ(1.5x)
        return y.sum()

    report = check_function(f, torch.tensor(0.5))
    rows = [(r.node, r.call, r.input) for r in report.rows]
    assert rows == [("SumBackward0", "Tensor.sum(SigmoidBackward0)", "SigmoidBackward0"),
                    ("SigmoidBackward0", "Tensor.sigmoid_(MulBackward0)", "MulBackward0"),
                    ("MulBackward0", "Tensor.mul(x, 1.5)", "x")]
    # Checked where the forward applied it: σ'(0.75), not σ' at the value sigmoid_ left behind.
    sig, s = report.rows[1], torch.sigmoid(torch.tensor(0.75, dtype=torch.float64))
    assert float(sig.numeric) == pytest.approx(float(sig.upstream) * float(s * (1 - s)), rel=1e-5)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(inplace=True),
                                torch.nn.Linear(4, 1))
    report = check_function(model, torch.randn(5, 3))
    assert ("ReluBackward0", "F.relu(AddmmBackward0)") in {(r.node, r.call) for r in report.rows}

    def g(x):
        y = x * 1.0
        y[0] = x[1] * 2.0
        return (y.T * 3).sum()

    report = check_function(g, torch.randn(2, 2))
    calls = {r.call for r in report.rows}
    assert {"Tensor.__setitem__(MulBackward0, 0, MulBackward0.1)", "Tensor.T(CopySlices)"} <= calls


def test_a_node_that_cannot_be_checked_is_named_and_fails():
    def f(x):
        class MadeInside(torch.autograd.Function):  # created after recording began: unseen
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return g * 2

        return MadeInside.apply(x * 1.0).sum()

    with pytest.raises(AssertionError) as info:
        check_function(f, torch.tensor([1.0, 2.0]))
    first = str(info.value).splitlines()[0]
    assert first.startswith("cannot check MadeInsideBackward (its Function class was created "
                            "after check_function began recording")
    # What was checked is still shown, and no row claims to be the unseen node.
    nodes = {line.split()[2] for line in str(info.value).splitlines()[2:] if line[:1] in "✓✗→"}
    assert nodes == {"SumBackward0", "MulBackward0"}
