"""Benchmark: the HTML explorer. Page size and time to write it, then the page opened in headless
Chromium: seconds from navigation to the first layout drawn (medians of interleaved runs, one
browser), Graphviz's own layout time, and unfolding one block and every module.

Run: python tests/bench/bench_explorer.py [--runs 5]   (needs Debian's chromium and chromium-driver)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backtrace import explain  # noqa: E402
from backtrace.render.formats import export  # noqa: E402
from tests import traced  # noqa: E402
from tests.pages import browser, console_errors, open_page  # noqa: E402


def transformer(layers: int):
    """A TransformerEncoder (d_model 64, 4 heads, ff 128) traced on 2 × 8 tokens."""
    return traced.transformer(layers)



def traces() -> dict:
    return {
        "textbook (5 nodes)": explain("f=(x+y)*z", x=-2, y=5, z=-4),
        "neuron (16 nodes)": explain("1/(1+exp(-(w0*x0+w1*x1+w2)))", w0=2, x0=-1, w1=-3, x1=-2,
                                     w2=-3),
        "12-layer transformer": transformer(12),
        "48-layer transformer": transformer(48),
    }


OPEN = "return performance.now()"  # ms since navigation start, read once the page is ready
UNFOLD = """var app = window.backtrace, t0 = performance.now();
app.toggle(arguments[0]); var one = performance.now() - t0;
t0 = performance.now(); app.model.foldAt(99); app.layout(null, true);
return [one, performance.now() - t0, app.view.vis.elements.size];"""


def measure(driver, page: Path, first_box: str | None) -> dict:
    t0 = time.perf_counter()
    open_page(driver, page)
    wall = time.perf_counter() - t0
    found = {"wall": wall, "ready": driver.execute_script(
        "return backtrace.timings.open") / 1000,
        "layout": driver.execute_script("return backtrace.timings.layout") / 1000}
    if first_box:
        one, every, boxes = driver.execute_script(UNFOLD, first_box)
        found.update(unfold=one / 1000, unfold_all=every / 1000, boxes=boxes)
    errors = console_errors(driver)
    assert not errors, errors
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        pages = {}
        print(f"{'trace':<22} {'nodes':>6} {'page MB':>8} {'write s':>8}")
        for name, t in traces().items():
            path = Path(tmp) / f"{len(pages)}.html"
            t0 = time.perf_counter()
            export(t, path)
            write = time.perf_counter() - t0
            first = "layers.0" if any(n.module for n in t.nodes) else None
            pages[name] = (path, first)
            print(f"{name:<22} {len(t.nodes):>6} {path.stat().st_size / 1e6:>8.2f} {write:>8.2f}")
        driver = browser(Path(tmp) / "profile")
        try:
            runs: dict[str, list[dict]] = {name: [] for name in pages}
            for _ in range(args.runs):  # interleaved: each round opens every page once
                for name, (path, first) in pages.items():
                    runs[name].append(measure(driver, path, first))
        finally:
            driver.quit()
    print(f"\nIn headless Chromium, medians of {args.runs} interleaved runs, seconds")
    print(f"{'trace':<22} {'to first layout':>16} {'of it, Graphviz':>16} "
          f"{'unfold a block':>15} {'unfold all':>11} {'boxes':>6}")
    for name, found in runs.items():
        med = {k: statistics.median(r[k] for r in found) for k in found[0]}
        extra = (f"{med['unfold']:>15.3f} {med['unfold_all']:>11.3f} {int(med['boxes']):>6}"
                 if "unfold" in med else f"{'':>15} {'':>11} {'':>6}")
        print(f"{name:<22} {med['ready']:>16.3f} {med['layout']:>16.3f} {extra}")


if __name__ == "__main__":
    main()
