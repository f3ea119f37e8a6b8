"""How testing's failure messages show numbers and tables (shared by assert_grads and
check_function); rich loads only when a table is drawn."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def show(v: Any) -> str:
    """A number short; a small tensor as a list; a bigger one by shape and norm."""
    from ..values import describe

    return describe(v, listed=4)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain text table (rich, no colour), as a string."""
    from ..render import to_text
    from ..render.tables import table as make_table

    out = make_table(columns)
    for row in rows:
        out.add_row(*row)
    return to_text(out, width=160)
