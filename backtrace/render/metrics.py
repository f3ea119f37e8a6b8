"""How wide text is drawn in the pictures' font, for cells that must keep one size whatever they
show (the replay's frames: a gradient cell reads "pending", then "(9) + …", then "33").

Widths are Helvetica's (Adobe's metrics, shared by Arial, Arimo and Liberation Sans), each
character at least as wide as graphviz-pure measures it (it counts every UTF-8 byte of a non-ASCII
character as a space), so a cell this wide is never widened by either engine."""
from __future__ import annotations

# Advance widths of ASCII 32..126 in thousandths of an em (Helvetica.afm).
_ASCII = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584)
_SYMBOLS = {"×": 584, "·": 278, "∂": 476, "‖": 500, "…": 1000, "—": 1000, "−": 584, "Δ": 612}
_SPACE = _ASCII[0]


def char_width(ch: str) -> int:
    """One character's width in thousandths of an em, the larger of the font's and graphviz-pure's."""
    code = ord(ch)
    if 32 <= code < 127:
        return _ASCII[code - 32]
    measured = _SPACE * len(ch.encode("utf-8"))  # graphviz-pure: each byte a space
    return max(_SYMBOLS.get(ch, 1000), measured)  # an unknown glyph: a whole em, to be safe


def text_width(text: str, size: float) -> float:
    """Width in points of `text` at font size `size`."""
    return sum(char_width(c) for c in text) * size / 1000
