"""Text geometry of Graphviz SVG, measured independently of any layout engine: each <text> is
measured with Adobe's Helvetica metrics (the AFM files matplotlib ships; Arial, Arimo and Liberation
Sans share them), glyphs Helvetica lacks with DejaVu Sans (what viewers fall back to), and checked
against the box of its node, its cluster and every other text."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NS = "{http://www.w3.org/2000/svg}"
SLACK = 0.75  # points: rounding in the SVG's coordinates
# Unicode characters backtrace draws, by their PostScript glyph names.
GLYPHS = {"×": "multiply", "·": "periodcentered", "∂": "partialdiff", "—": "emdash",
          "–": "endash", "…": "ellipsis", "−": "minus", "Δ": "Delta", "•": "bullet",
          "'": "quotesingle", "`": "grave", "°": "degree", "µ": "mu"}


@lru_cache(maxsize=None)
def _afm(bold: bool) -> dict[str, int]:
    import matplotlib

    name = "Helvetica-Bold.afm" if bold else "Helvetica.afm"
    path = Path(matplotlib.get_data_path()) / "fonts" / "pdfcorefonts" / name
    widths = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        m = re.match(r"C (-?\d+) ; WX (\d+) ; N (\S+) ;", line)
        if m:
            widths[m.group(3)] = int(m.group(2))
            code = int(m.group(1))
            if 32 <= code < 127 and code not in (39, 96):  # StandardEncoding == ASCII here
                widths[chr(code)] = int(m.group(2))
    return widths


@lru_cache(maxsize=None)
def _fallback(bold: bool):
    import matplotlib
    from matplotlib.ft2font import FT2Font

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    font = FT2Font(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name))
    font.set_size(100, 72)  # 1 px per point, so an advance in px / 100 is in ems
    return font


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Advance width of `text` in points at font size `size`."""
    widths, total = _afm(bold), 0.0
    for ch in text:
        key = GLYPHS.get(ch, ch)
        if key in widths:
            total += widths[key] / 1000
        else:
            total += _fallback(bold).load_char(ord(ch)).linearHoriAdvance / 65536 / 100
    return total * size


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def contains(self, other: Box, slack: float = SLACK) -> bool:
        return (other.x0 >= self.x0 - slack and other.x1 <= self.x1 + slack
                and other.y0 >= self.y0 - slack and other.y1 <= self.y1 + slack)

    def overlaps(self, other: Box, slack: float = SLACK) -> bool:
        return (min(self.x1, other.x1) - max(self.x0, other.x0) > slack
                and min(self.y1, other.y1) - max(self.y0, other.y0) > slack)


@dataclass(frozen=True)
class Text:
    text: str
    box: Box
    owner: str  # "node n3", "edge n0->n2", "cluster ...", "graph"


def _numbers(s: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", s)]


def shape_box(el) -> Box | None:
    """The bounding box of a polygon, path or ellipse."""
    if el.tag == f"{NS}polygon":
        xs = _numbers(el.get("points"))
    elif el.tag == f"{NS}path":
        xs = _numbers(el.get("d"))
    elif el.tag == f"{NS}ellipse":
        cx, cy, rx, ry = (float(el.get(k)) for k in ("cx", "cy", "rx", "ry"))
        return Box(cx - rx, cy - ry, cx + rx, cy + ry)
    else:
        return None
    px, py = xs[0::2], xs[1::2]
    return Box(min(px), min(py), max(px), max(py))


def text_box(el) -> Text:
    """Where a <text> element's glyphs lie: its anchor, advance width and font size."""
    size = float(el.get("font-size", "14"))
    content = "".join(el.itertext())
    width = text_width(content, size, el.get("font-weight") == "bold")
    x, y = float(el.get("x")), float(el.get("y"))
    anchor = el.get("text-anchor", "start")
    x0 = x - width / 2 if anchor == "middle" else x - width if anchor == "end" else x
    # Cap height above the baseline, a little descent below it.
    return Text(content, Box(x0, y - 0.72 * size, x0 + width, y + 0.2 * size), "")


def _title(g) -> str:
    t = g.find(f"{NS}title")
    return (t.text or "") if t is not None else ""


def parse(svg: bytes | str) -> tuple[list[tuple[str, Box, list[Text]]], list[Text]]:
    """(owner, frame, texts) for every node and cluster, and every text of the picture."""
    root = ET.fromstring(svg)
    framed, everything = [], []
    for g in root.iter(f"{NS}g"):
        kind = g.get("class")
        if kind not in ("node", "edge", "cluster", "graph"):
            continue
        owner = f"{kind} {_title(g)}"
        shapes = [b for b in (shape_box(e) for e in g.iter() if e.tag != f"{NS}text")
                  if b is not None]
        own = [el for el in g.iter(f"{NS}text")] if kind != "graph" else \
            [el for el in g if el.tag == f"{NS}text"]
        texts = [Text(t.text, t.box, owner) for t in map(text_box, own) if t.text.strip()]
        everything += texts
        if kind == "edge":
            heads = [b for e, b in ((e, shape_box(e)) for e in g.iter(f"{NS}polygon")) if b]
            framed += [(f"arrowhead {_title(g)}", b, []) for b in heads]
        elif kind in ("node", "cluster") and shapes:
            frame = Box(min(b.x0 for b in shapes), min(b.y0 for b in shapes),
                        max(b.x1 for b in shapes), max(b.y1 for b in shapes))
            framed.append((owner, frame, texts))
    return framed, everything


def problems(svg: bytes | str) -> list[str]:
    """Every text that leaves its node's or cluster's box, and every pair of texts that overlap."""
    framed, texts = parse(svg)
    found = []
    for owner, frame, inside in framed:
        if owner.startswith("cluster"):
            inside = inside[:1]  # a cluster's own label; its nodes are checked on their own
        for t in inside:
            if not frame.contains(t.box):
                found.append(f"{owner}: {t.text!r} ({t.box.x1 - t.box.x0:.1f} pt wide) leaves its box "
                             f"({frame.x0:.1f}..{frame.x1:.1f}; text {t.box.x0:.1f}..{t.box.x1:.1f})")
    nodes = [(owner, frame) for owner, frame, _ in framed if owner.startswith(("node", "arrowhead"))]
    for t in texts:
        if t.owner.startswith("edge"):
            for owner, frame in nodes:
                if frame.overlaps(t.box):
                    found.append(f"{t.owner}: label {t.text!r} runs into {owner}")
    for i, a in enumerate(texts):
        for b in texts[i + 1:]:
            if a.box.overlaps(b.box):
                found.append(f"{a.owner} {a.text!r} overlaps {b.owner} {b.text!r}")
    return found


def size(svg: bytes | str) -> tuple[float, float]:
    """The picture's width and height in points."""
    root = ET.fromstring(svg)
    return tuple(float(re.match(r"[\d.]+", root.get(k)).group()) for k in ("width", "height"))
