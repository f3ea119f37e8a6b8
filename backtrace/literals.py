"""Tensor values as text, for the command line: '[1.4, 2.7]', nested lists, 'randn(3, 4)'.

Read by a small tokenizer and a recursive reader, never evaluated: the only words are the makers
randn, zeros and ones. The result is a number or nested lists, checked like any tensor value.
"""
from __future__ import annotations

import math
import random
import re
from typing import Any

from .errors import MissingValueError
from .tensor import MAX_DIMS, MAX_ELEMENTS, Tensor, check_size, from_value, size

_LITERAL = re.compile(r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<word>[A-Za-z_]\w*)"
                      r"|(?P<sym>[\[\](),]))")
MAKERS = {"randn": "standard normal", "zeros": "zeros", "ones": "ones"}


def parse_literal(text: str, name: str, rng: random.Random) -> float | list:
    """'-2', '[1.4, 2.7]', '[[1, 2], [3, 4]]', 'randn(3, 4)', 'zeros(2)': a number or nested lists.

    Read by a tokenizer, never evaluated; randn draws from `rng` (seeded by the caller)."""
    toks = _tokens(text, name)
    value, end = _literal(toks, 0, name, rng, 0)
    if end != len(toks):
        raise MissingValueError(f"value of {name}: unexpected {toks[end][1]!r} after the value "
                                f"in {text!r}"[:200])
    if isinstance(value, list):
        from_value(value, name)  # rectangular, finite, within the limit
    return value


def _tokens(text: str, name: str) -> list[tuple[str, str]]:
    toks, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _LITERAL.match(text, pos)
        if m is None or m.end() == pos:
            raise MissingValueError(f"value of {name} must be a number, a list like [1, 2] or "
                                    f"randn(3, 4), got {text!r}"[:200])
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))
        pos = m.end()
    return toks


def _literal(toks: list, i: int, name: str, rng: random.Random, depth: int) -> tuple[Any, int]:
    if i >= len(toks):
        raise MissingValueError(f"value of {name} ends too early")
    kind, text = toks[i]
    if kind == "num":
        v = float(text)
        if not math.isfinite(v):
            raise MissingValueError(f"value of {name} must be finite, got {text[:20]}")
        return v, i + 1
    if kind == "word":
        return _maker(toks, i, name, rng)
    if text != "[" or depth >= MAX_DIMS:
        raise MissingValueError(f"value of {name}: unexpected {text!r}"
                                + (f" (more than {MAX_DIMS} dimensions)" if text == "[" else ""))
    items, i = [], i + 1
    while True:
        item, i = _literal(toks, i, name, rng, depth + 1)
        items.append(item)
        if len(items) > MAX_ELEMENTS:
            check_size((len(items),), f"value of {name}")
        sym = toks[i][1] if i < len(toks) else ""
        if sym == "]":
            return items, i + 1
        if sym != ",":
            raise MissingValueError(f"value of {name}: expected ',' or ']' in the list")
        i += 1


def _maker(toks: list, i: int, name: str, rng: random.Random) -> tuple[list | float, int]:
    word = toks[i][1]
    if word not in MAKERS:
        raise MissingValueError(f"value of {name}: unknown {word!r} (a number, a list, or "
                                f"{', '.join(f'{m}(3, 4)' for m in MAKERS)})")
    dims, i = [], i + 1
    if i >= len(toks) or toks[i][1] != "(":
        raise MissingValueError(f"value of {name}: write {word}(3, 4)")
    i += 1
    while i < len(toks) and toks[i][1] != ")":
        kind, text = toks[i]
        if kind != "num" or not text.isdigit() or int(text) < 1:
            raise MissingValueError(f"value of {name}: {word}() takes positive whole sizes, "
                                    f"got {text!r}")
        dims.append(int(text))
        i += 1
        if i < len(toks) and toks[i][1] == ",":
            i += 1
    if i >= len(toks) or not 1 <= len(dims) <= MAX_DIMS:
        raise MissingValueError(f"value of {name}: write {word}(3, 4) with 1 to {MAX_DIMS} sizes")
    check_size(dims, f"value of {name}")
    draw = {"randn": lambda: rng.gauss(0.0, 1.0), "zeros": lambda: 0.0, "ones": lambda: 1.0}[word]
    return Tensor(tuple(dims), [draw() for _ in range(size(dims))]).tolist(), i + 1
