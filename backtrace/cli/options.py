"""What several commands parse the same way: input values given on the command line."""
from __future__ import annotations

import math

from ..errors import MissingValueError, UsageError


def parse_values(tokens: tuple[str, ...]) -> dict[str, float]:
    """'--x -2', '--x=-2' and 'x=-2' -> {'x': -2.0}."""
    values: dict[str, float] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and "=" in tok:
            name, text = tok[2:].split("=", 1)
        elif tok.startswith("--") and len(tok) > 2:
            if i + 1 >= len(tokens):
                raise MissingValueError(f"{tok} needs a value, e.g. {tok} 1.5")
            name, text = tok[2:], tokens[i + 1]
            i += 1
        elif "=" in tok and not tok.startswith("-"):
            name, text = tok.split("=", 1)
        else:
            raise UsageError(f"unexpected argument {tok!r}: give values as --x -2 or x=-2 "
                             "(and quote the formula)")
        if name in values:
            raise UsageError(f"{name} is given twice")
        try:
            number = float(text)
        except ValueError:
            raise MissingValueError(f"value of {name} must be a number, got {text!r}") from None
        if not math.isfinite(number):
            raise MissingValueError(f"value of {name} must be finite, got {text!r}")
        values[name] = number
        i += 1
    return values
