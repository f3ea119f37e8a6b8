"""How each op-table row runs on tensors: its output shape, its forward, and per input slot its
vector-Jacobian product as numbers (the local factor and the contribution it sends back) and as
text over the operands and the upstream gradient {g}.

Elementwise rows get theirs from their scalar forward and derivatives (`elementwise`), so a
scalar op is one row for both engines; the rows that only exist on tensors (@, sum, mean,
transpose, softmax, log_softmax, cross_entropy, mse, broadcast) are defined here. Pure Python.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import tensor as T
from .tensor import Tensor, shape_text

Params = dict[str, Any]
Vjp = Callable[[Tensor, list[Tensor], Tensor, Params], tuple[Any, Tensor | None]]


class ShapeMismatch(Exception):
    """Shapes an op cannot take; the text names the operands as {a}, {b}, ... (the engine fills
    in names and shapes, and the node)."""


class BadValue(Exception):
    """A value an op cannot take (a class index out of range); the text names operands as {a}, {b}."""


@dataclass(frozen=True)
class TensorRule:
    """An op on tensors: shape(shapes, params), forward(tensors, params), one VJP per input slot
    (vjp(g, inputs, out, params) -> (local factor or None, contribution or None)) and its text."""

    shape: Callable[[list[tuple[int, ...]], Params], tuple[int, ...]]
    forward: Callable[[list[Tensor], Params], Tensor]
    vjps: tuple[Vjp, ...]
    rules: tuple[str, ...]  # over {g} (the upstream gradient), {a}, {b}, ... and {out}
    shaped: Callable[..., str] | None = None  # (slot, names, shapes, params) -> text with shapes
    broadcasts: bool = False  # elementwise over broadcast inputs: the engines insert broadcast nodes

    @property
    def arity(self) -> int:
        """Input slots."""
        return len(self.vjps)

    def text(self, slot: int, names: dict[str, str], shapes: dict[str, tuple[int, ...]],
             params: Params) -> str:
        """The rule of `slot` over these operand names (and their shapes, where they matter)."""
        if self.shaped is not None:
            return self.shaped(slot, names, shapes, params)
        return self.rules[slot].format(**names)


# ---------------------------------------------------------------- elementwise rows

def _broadcast_all(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    out = shapes[0]
    for s in shapes[1:]:
        joined = T.broadcast_shape(out, s)
        if joined is None:
            raise ShapeMismatch("elementwise ops need shapes that broadcast (equal, or 1, "
                                "aligned from the right)")
        out = joined
    return out


def _times(rule: str) -> str:
    """'{g} ⊙ (rule)', simplified where the rule is ±1."""
    if rule == "1":
        return "{g}"
    if rule == "-1":
        return "-{g}"
    simple = all(c.isalnum() or c in "{}_." for c in rule)
    return "{g} ⊙ " + (rule if simple else f"({rule})")


def elementwise(op: Any) -> TensorRule:
    """The tensor form of a scalar row: forward and local derivative element by element."""
    f, derivs = op.forward, op.derivs

    def forward(ins: list[Tensor], params: Params) -> Tensor:
        if len(ins) == 1:
            a = ins[0]
            return Tensor(a.shape, [f(x) for x in a.data])
        return T.zip_map(f, _broadcast_all([t.shape for t in ins], params), *ins)

    def vjp_of(slot: int, deriv: Callable[..., float]) -> Vjp:
        def vjp(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
            local = T.zip_map(deriv, out.shape, *ins, out)
            return local, T.sum_to(T.zip_map(float.__mul__, out.shape, g, local), ins[slot].shape)
        return vjp

    rules = tuple(_times(rule) for rule in op.rules)
    return TensorRule(_broadcast_all, forward, tuple(vjp_of(k, d) for k, d in enumerate(derivs)), rules,
                      broadcasts=op.arity > 1)


# ---------------------------------------------------------------- @

def _matmul_shape(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    a, b = shapes
    if not (1 <= len(a) <= 2 and 1 <= len(b) <= 2):
        raise ShapeMismatch("@ takes vectors and matrices")
    if a[-1] != b[0]:
        raise ShapeMismatch(f"@ needs the last axis of {{a}} ({a[-1]}) to equal the first axis of "
                            f"{{b}} ({b[0]})")
    return T.matmul_shape(a, b)


def _as_matrices(g: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    a2, b2 = T.as_matrix(a, row=True), T.as_matrix(b, row=False)
    return g.reshape((a2.shape[0], b2.shape[1])), a2, b2


def _matmul_da(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
    g2, _, b2 = _as_matrices(g, *ins)
    local = T.transpose(b2)
    return local, T.mm(g2, local).reshape(ins[0].shape)


def _matmul_db(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
    g2, a2, _ = _as_matrices(g, *ins)
    local = T.transpose(a2)
    return local, T.mm(local, g2).reshape(ins[1].shape)


def _matmul_text(slot: int, names: dict, shapes: dict, params: Params) -> str:
    """'{g} [1×4] · W2ᵀ [4×3]' with vectors shown as the rows or columns they act as."""
    a, b = shapes["a"], shapes["b"]
    ra, cb = (a[0] if len(a) == 2 else 1), (b[1] if len(b) == 2 else 1)
    n, g = a[-1], shape_text((ra, cb))
    if slot == 0:
        return f"{names['g']} {g} · {names['b']}ᵀ {shape_text((cb, n))}"
    return f"{names['a']}ᵀ {shape_text((n, ra))} · {names['g']} {g}"


MATMUL = TensorRule(_matmul_shape, lambda ins, p: T.matmul(*ins), (_matmul_da, _matmul_db),
                    ("{g} · {b}ᵀ", "{a}ᵀ · {g}"), shaped=_matmul_text)


# ---------------------------------------------------------------- sum, mean, transpose

def _axis(shape: tuple[int, ...], params: Params) -> int | None:
    dim = params.get("dim")
    if dim is None:
        return None
    if not -len(shape) <= dim < len(shape):
        raise ShapeMismatch(f"axis {dim} does not exist in {{a}} (it has {len(shape)} "
                            f"ax{'is' if len(shape) == 1 else 'es'})")
    return dim % len(shape)


def _reduced_shape(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    (shape,) = shapes
    dim = _axis(shape, params)
    return () if dim is None else shape[:dim] + shape[dim + 1:]


def _count(shape: tuple[int, ...], params: Params) -> int:
    dim = _axis(shape, params)
    return T.size(shape) if dim is None else shape[dim]


def _sum_vjp(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
    return 1.0, T.expand(g, ins[0].shape, _axis(ins[0].shape, params))


def _mean_vjp(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
    shape = ins[0].shape
    local = 1.0 / _count(shape, params)
    spread = T.expand(g, shape, _axis(shape, params))
    return local, Tensor(shape, [x * local for x in spread.data])


def _reduction_text(mean: bool) -> Callable[..., str]:
    def text(slot: int, names: dict, shapes: dict, params: Params) -> str:
        shape, dim = shapes["a"], params.get("dim")
        n = _count(shape, params)
        head = f"{names['g']} / {n}" if mean else names["g"]
        if dim is None:
            return f"{head}, copied to all {n} elements"
        return f"{head}, copied along axis {_axis(shape, params)} ({n} times)"
    return text


SUM = TensorRule(_reduced_shape, lambda ins, p: T.reduce_sum(ins[0], _axis(ins[0].shape, p)),
                 (_sum_vjp,), ("{g}, copied to every element of {a}",),
                 shaped=_reduction_text(mean=False))


def _mean_forward(ins: list[Tensor], params: Params) -> Tensor:
    total = T.reduce_sum(ins[0], _axis(ins[0].shape, params))
    n = _count(ins[0].shape, params)
    return Tensor(total.shape, [x / n for x in total.data])


MEAN = TensorRule(_reduced_shape, _mean_forward, (_mean_vjp,),
                  ("{g} / n, copied to each of the n elements of {a}",),
                  shaped=_reduction_text(mean=True))


def _transpose_shape(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    (shape,) = shapes
    if len(shape) > 2:
        raise ShapeMismatch("transpose takes vectors and matrices")
    return tuple(reversed(shape))


TRANSPOSE = TensorRule(_transpose_shape, lambda ins, p: T.transpose(ins[0]),
                       (lambda g, ins, out, p: (None, T.transpose(g)),), ("{g}ᵀ",))


# ---------------------------------------------------------------- softmax and friends

def _last_axis(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    (shape,) = shapes
    if len(shape) > 2:
        raise ShapeMismatch("softmax takes a vector, or a matrix row by row")
    return shape


def _softmax_vjp(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
    parts = []
    for gr, pr in zip(T.rows(g), T.rows(out)):
        dot = math.fsum(x * p for x, p in zip(gr, pr))
        parts.append([p * (x - dot) for x, p in zip(gr, pr)])
    local = None
    if len(out.shape) == 1:  # one Jacobian: diag(p) - pᵀp
        p = out.data
        local = Tensor((len(p), len(p)), [(pi if i == j else 0.0) - pi * pj
                                          for i, pi in enumerate(p) for j, pj in enumerate(p)])
    return local, T.joined(g.shape, parts)


def _log_softmax_vjp(g: Tensor, ins: list[Tensor], out: Tensor,
                     params: Params) -> tuple[Any, Tensor]:
    probs = [[math.exp(x) for x in row] for row in T.rows(out)]
    parts = []
    for gr, pr in zip(T.rows(g), probs):
        total = math.fsum(gr)
        parts.append([x - p * total for x, p in zip(gr, pr)])
    local = None
    if len(out.shape) == 1:  # ∂out_i/∂a_j = δij - p_j
        (p,) = probs
        local = Tensor((len(p), len(p)), [(1.0 if i == j else 0.0) - pj
                                          for i in range(len(p)) for j, pj in enumerate(p)])
    return local, T.joined(g.shape, parts)


def _by_rows(text: str) -> Callable[..., str]:
    def shaped(slot: int, names: dict, shapes: dict, params: Params) -> str:
        body = text.format(**names)
        return body if len(shapes["a"]) < 2 else f"row by row: {body}"
    return shaped


SOFTMAX = TensorRule(_last_axis, lambda ins, p: T.joined(ins[0].shape, T.softmax_rows(ins[0])),
                     (_softmax_vjp,), ("{g} · (diag({out}) − {out}ᵀ{out})",),
                     shaped=_by_rows("{g} · (diag({out}) − {out}ᵀ{out})"))
LOG_SOFTMAX = TensorRule(_last_axis,
                         lambda ins, p: T.joined(ins[0].shape, T.log_softmax_rows(ins[0])),
                         (_log_softmax_vjp,), ("{g} − Σ{g} · softmax({a})",),
                         shaped=_by_rows("{g} − Σ{g} · softmax({a})"))


def _class_targets(z: tuple[int, ...], y: tuple[int, ...]) -> bool:
    """True when y holds class indices (one per row of z), False when probabilities like z."""
    return y != z


def _cross_entropy_shape(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    z, y = shapes
    if not 1 <= len(z) <= 2:
        raise ShapeMismatch("cross_entropy takes scores {a} as a vector [C] or a batch [N×C]")
    if y != z and y != z[:-1]:
        raise ShapeMismatch(f"cross_entropy needs {{b}} to hold class indices "
                            f"{shape_text(z[:-1])} or probabilities {shape_text(z)}")
    return ()


def _targets(z: Tensor, y: Tensor) -> list[list[float]]:
    """The target rows: one-hot for class indices (checked), y's rows for probabilities."""
    if not _class_targets(z.shape, y.shape):
        return T.rows(y)
    classes = z.shape[-1]
    out = []
    for k in y.data:
        if not (k == int(k) and 0 <= k < classes):
            raise BadValue(f"{{b}} = {k:g} is not a class index of {{a}} (a whole number from 0 "
                           f"to {classes - 1})")
        out.append([1.0 if c == int(k) else 0.0 for c in range(classes)])
    return out


def _cross_entropy(ins: list[Tensor], params: Params) -> Tensor:
    z, y = ins
    logp = T.log_softmax_rows(z)
    total = math.fsum(-math.fsum(t * lp for t, lp in zip(tr, lr) if t)
                      for tr, lr in zip(_targets(z, y), logp))
    return T.scalar(total / len(logp))


def _ce_dz(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
    z, y = ins
    probs, targets = T.softmax_rows(z), _targets(z, y)
    n = len(probs)
    local = T.joined(z.shape, [[(p - t) / n for p, t in zip(pr, tr)]
                               for pr, tr in zip(probs, targets)])
    return local, Tensor(z.shape, [g.item() * x for x in local.data])


def _ce_dy(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor | None]:
    z, y = ins
    if _class_targets(z.shape, y.shape):
        return None, None  # class indices are not differentiable
    logp = T.log_softmax_rows(z)
    local = T.joined(z.shape, [[-x / len(logp) for x in row] for row in logp])
    return local, Tensor(z.shape, [g.item() * x for x in local.data])


def _ce_text(slot: int, names: dict, shapes: dict, params: Params) -> str:
    z, y = shapes["a"], shapes["b"]
    batch = f" / {z[0]} (the batch mean)" if len(z) == 2 else ""
    if slot == 1:
        if _class_targets(z, y):
            return "none: class indices have no gradient"
        return f"{names['g']} · (−log_softmax({names['a']})){batch}"
    target = f"onehot({names['b']})" if _class_targets(z, y) else names["b"]
    return f"{names['g']} · (softmax({names['a']}) − {target}){batch}"


CROSS_ENTROPY = TensorRule(_cross_entropy_shape, _cross_entropy, (_ce_dz, _ce_dy),
                           ("{g} · (softmax({a}) − onehot({b}))", "{g} · (−log_softmax({a}))"),
                           shaped=_ce_text)


def _same_shapes(shapes: list[tuple[int, ...]], params: Params) -> tuple[int, ...]:
    a, b = shapes
    if a != b:
        raise ShapeMismatch("mse needs {a} and {b} of the same shape")
    return ()


def _mse_vjp(sign: float) -> Vjp:
    def vjp(g: Tensor, ins: list[Tensor], out: Tensor, params: Params) -> tuple[Any, Tensor]:
        a, b = ins
        n = a.numel
        local = Tensor(a.shape, [sign * 2.0 * (x - y) / n for x, y in zip(a.data, b.data)])
        return local, Tensor(a.shape, [g.item() * x for x in local.data])
    return vjp


def _mse_text(slot: int, names: dict, shapes: dict, params: Params) -> str:
    n = T.size(shapes["a"])
    sign = "" if slot == 0 else "−"
    return f"{names['g']} · {sign}2·({names['a']} − {names['b']}) / {n}"


MSE = TensorRule(_same_shapes,
                 lambda ins, p: T.scalar(math.fsum((x - y) ** 2 for x, y in zip(ins[0].data, ins[1].data))
                                         / ins[0].numel),
                 (_mse_vjp(1.0), _mse_vjp(-1.0)),
                 ("{g} · 2·({a} − {b}) / n", "{g} · −2·({a} − {b}) / n"), shaped=_mse_text)


# ---------------------------------------------------------------- broadcast (inserted by the engines)

def _broadcast_text(slot: int, names: dict, shapes: dict, params: Params) -> str:
    src, out = shapes["a"], tuple(params["size"])
    axes = T.broadcast_axes(src, out)
    where = f"ax{'is' if len(axes) == 1 else 'es'} {', '.join(map(str, axes))}"
    return f"{names['g']} summed over {where} ({shape_text(out)} → {shape_text(src)})"


BROADCAST = TensorRule(lambda shapes, p: tuple(p["size"]),
                       lambda ins, p: T.broadcast_to(ins[0], tuple(p["size"])),
                       (lambda g, ins, out, p: (None, T.sum_to(g, ins[0].shape)),),
                       ("{g} summed over the broadcast axes",), shaped=_broadcast_text)
