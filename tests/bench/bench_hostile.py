"""How long each hostile formula takes to be refused (the limits promise: well under a second).

Run: python tests/bench/bench_hostile.py
Times every line of tests/data/hostile_formulas.txt through backtrace.explain (best of 3) and prints
the slowest ones and the total, plus a few CLI runs end to end.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import backtrace
from backtrace.errors import BacktraceError

CORPUS = Path(__file__).parent.parent / "data" / "hostile_formulas.txt"


def rows():
    for line in CORPUS.read_text(encoding="utf-8").split("\n"):
        if line and not line.startswith("#"):
            cls, formula, values = (line.split("\t") + [""])[:3]
            pairs = dict(v.split("=") for v in values.split()) if values else {}
            yield cls, formula.replace("\\n", "\n"), {k: float(v) for k, v in pairs.items()}


def refuse(formula: str, values: dict) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        try:
            backtrace.explain(formula, **values)
        except BacktraceError:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    timings = sorted(((refuse(f, v), cls, f) for cls, f, v in rows()), reverse=True)
    print(f"{len(timings)} hostile formulas, total {sum(t for t, _, _ in timings):.3f} s, "
          f"slowest {timings[0][0] * 1000:.1f} ms")
    for t, cls, formula in timings[:5]:
        shown = formula if len(formula) < 40 else f"{formula[:20]}…({len(formula):,} chars)"
        print(f"  {t * 1000:8.1f} ms  {cls:<18} {shown!r}")
    # (one command-line argument is limited to 128 KiB, so 50,000 parentheses each side)
    for formula in ("9**9**9**9", "(" * 50_000 + "x" + ")" * 50_000):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "backtrace", "explain", formula, "x=1", "--engine",
                        "reference"], capture_output=True)
        shown = formula if len(formula) < 40 else f"{formula[:10]}…({len(formula):,} chars)"
        print(f"CLI end to end {shown!r}: {time.perf_counter() - start:.2f} s (a fresh process)")


if __name__ == "__main__":
    main()
