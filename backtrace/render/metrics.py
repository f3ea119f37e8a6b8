"""How wide text is drawn in the pictures' font, for cells that must keep one size whatever they
show (the replay's frames: a gradient cell reads "pending", then "(9) + …", then "33").

Each character counts as wide as the widest of: Helvetica (Adobe's metrics, shared by Arial, Arimo
and Liberation Sans), DejaVu Sans (what a system Graphviz measures with where fontconfig has no
Helvetica twin) and graphviz-pure's own measure (every UTF-8 byte of a non-ASCII character a
space), so a cell this wide is never widened by any engine."""
from __future__ import annotations

# Advance widths of ASCII 32..126 in thousandths of an em (Helvetica.afm).
_ASCII = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584)
# The same in DejaVu Sans (DejaVuSans.ttf, 2048 units per em, in thousandths).
_DEJAVU = (
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636, 636,
    636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698, 770, 632,
    575, 775, 752, 295, 295, 656, 557, 863, 748, 787, 603, 787, 695, 635, 611, 732, 684, 989, 685,
    611, 685, 390, 337, 390, 838, 500, 500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579,
    278, 974, 634, 612, 635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838)
# Symbols the pictures use, the wider of the two fonts.
_SYMBOLS = {"×": 838, "·": 318, "∂": 517, "‖": 500, "…": 1000, "—": 1000, "−": 838, "Δ": 684}
_SPACE = _ASCII[0]


def char_width(ch: str) -> int:
    """One character's width in thousandths of an em, the widest any engine gives it."""
    code = ord(ch)
    if 32 <= code < 127:
        return max(_ASCII[code - 32], _DEJAVU[code - 32])
    measured = _SPACE * len(ch.encode("utf-8"))  # graphviz-pure: each byte a space
    return max(_SYMBOLS.get(ch, 1000), measured)  # an unknown glyph: a whole em, to be safe


def text_width(text: str, size: float) -> float:
    """Width in points of `text` at font size `size`."""
    return sum(char_width(c) for c in text) * size / 1000
