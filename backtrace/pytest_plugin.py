"""pytest plugin (entry point ``pytest11``): the ``backtrace`` fixture, the backward table of the
last trace in a failing test's report, ``--backtrace-dir`` and ``--backtrace-update``.

Loading the plugin imports neither torch nor the tracer: they load when a test asks for them. It
changes backtrace.testing only through ``backtrace.testing.configure`` (goldens rewritten for the
session, traces recorded for the test) and undoes it at the end."""
from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .traces import Trace

_FIXTURE = pytest.StashKey["BacktraceFixture"]()
_UNDO_SETTINGS = pytest.StashKey[Callable[[], None]]()
SECTION = "backtrace: backward pass of the last trace"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backtrace", "backtrace: traces of the backward pass")
    group.addoption("--backtrace-dir", metavar="DIR", default=None,
                    help="save the last trace of each failing test as SVG and JSON in DIR")
    group.addoption("--backtrace-update", action="store_true", default=False,
                    help="rewrite golden traces (backtrace.testing.assert_trace_matches) "
                         "instead of comparing with them")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("backtrace_update"):
        undo = contextlib.ExitStack()
        undo.enter_context(_testing().configure(update_goldens=True))
        config.stash[_UNDO_SETTINGS] = undo.close


def pytest_unconfigure(config: pytest.Config) -> None:
    undo = config.stash.get(_UNDO_SETTINGS, None)
    if undo is not None:  # pytester runs sessions inside sessions: restore
        undo()


def _testing() -> Any:
    """backtrace.testing as sys.modules has it now (`from . import` could hand back a stale copy
    when pytester has dropped the module between in-process runs)."""
    return importlib.import_module("backtrace.testing")


class BacktraceFixture:
    """The tracer scoped to one test: ``with backtrace.trace(model=m) as t: loss.backward()``.

    Every tracer it made is closed when the test ends, pass or fail, so no hook outlives the
    test; the last trace recorded is shown in the report of a failing test."""

    def __init__(self) -> None:
        self._sources: list[Any] = []  # tracers and traces, in the order the test made them

    def trace(self, model: Any = None, names: Any = None, level: str = "stats",
              **options: Any) -> Any:
        """``backtrace.trace(...)``, closed at the end of the test if the test did not close it."""
        from .tracer import trace

        tracer = trace(model=model, names=names, level=level, **options)
        self._sources.append(tracer)
        return tracer

    __call__ = trace

    def explain(self, formula: str, **values: float) -> Trace:
        """``backtrace.explain`` on the reference engine, recorded for the report."""
        from .engine import explain
        return self.record(explain(formula, **values))

    def explain_function(self, f: Any, engine: str = "reference", **values: float) -> Trace:
        """``backtrace.testing.explain_function`` (it records its trace here by itself)."""
        from .testing import explain_function
        return explain_function(f, engine, **values)

    def record(self, trace: Trace) -> Trace:
        """Keep a trace made some other way, so a failing test's report shows it."""
        self._sources.append(trace)
        return trace

    @property
    def traces(self) -> list[Trace]:
        """Every trace of this test so far, in order."""
        out: list[Trace] = []
        for s in self._sources:
            out.extend([s] if isinstance(s, Trace) else s.traces)
        return out

    @property
    def last(self) -> Trace | None:
        """The most recent trace, or None."""
        traces = self.traces
        return traces[-1] if traces else None

    def close(self) -> None:
        """Exit every tracer, newest first (each restores what the one before it patched)."""
        errors = []
        for s in reversed(self._sources):
            if not isinstance(s, Trace):
                try:
                    s.__exit__(None, None, None)  # idempotent: a closed tracer has nothing left
                except Exception as exc:  # keep closing the others, then report
                    errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(name="backtrace")
def _backtrace_fixture(request: pytest.FixtureRequest) -> Iterator[BacktraceFixture]:
    """The tracer scoped to this test (``backtrace.trace(...)``); hooks are removed at the end."""
    fixture = BacktraceFixture()
    request.node.stash[_FIXTURE] = fixture
    try:
        # Traces that backtrace.testing makes (assert_grads, explain_function) go to the report.
        with _testing().configure(on_trace=fixture.record):
            yield fixture
    finally:
        fixture.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = yield
    fixture = item.stash.get(_FIXTURE, None)
    if report.when == "call" and report.failed and fixture is not None:
        try:
            trace = fixture.last
            if trace is not None:
                _attach(report, SECTION, _report_text(item, trace))
        except Exception as exc:  # a problem of the plugin is this test's, never the session's
            _attach(report, SECTION, f"backtrace could not show the last trace: {_one_line(exc)}")
    return report


def _one_line(exc: BaseException) -> str:
    """An exception as one line (torch's dispatcher errors run to a hundred lines)."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0] if lines else ""
    first = first if len(first) <= 160 else first[:159] + "…"
    return f"{type(exc).__name__}: {first}".rstrip(": ")


def _attach(report: pytest.TestReport, title: str, text: str) -> None:
    longrepr = report.longrepr
    if hasattr(longrepr, "addsection"):  # shown right under the traceback
        longrepr.addsection(title, text)
    else:
        report.sections.append((title, text))


def _report_text(item: pytest.Item, trace: Trace) -> str:
    """The backward table, then where the trace was saved; each part says why if it fails."""
    try:
        text = backward_text(trace)
    except Exception as exc:
        text = f"backtrace could not show the last trace: {_one_line(exc)}"
    folder = item.config.getoption("backtrace_dir")
    if folder:
        text += "\n" + _save(trace, Path(folder), item.nodeid)
    return text


def backward_text(trace: Trace, width: int = 120) -> str:
    """The backward table of a trace as plain text, tensors shown by shape and norm."""
    from .render import tables, to_text

    table = tables.backward_table(trace, _report_columns(), steps=trace.steps, limit=MAX_ROWS)
    heading = (f"{trace.engine} engine, output {trace.output}: {len(trace.steps)} backward steps, "
               f"upstream × local = contribution")
    return to_text(heading, table, width=width)


MAX_ROWS = 60  # a failure report shows the steps nearest the output


def _report_columns() -> tuple:
    """The failure report's backward table: each node's op and module, small tensors listed."""
    from .render.tables import Column
    from .values import describe

    def short(v: Any) -> str:
        try:
            return describe(v, listed=4)
        except Exception as exc:  # a value the formatter cannot read (a sparse tensor) is one cell
            return f"({type(exc).__name__})"

    def op(trace: Trace, step: Any, e: Any) -> str:
        node = trace.node(step.node)
        kind = node.meta.get("torch_type") or node.op
        return f"{kind} ({node.module})" if node.module else kind

    def local(trace: Trace, step: Any, e: Any) -> str:
        return "" if e is None else short(e.local) if e.local is not None else (e.rule or "—")

    def contribution(trace: Trace, step: Any, e: Any) -> str:
        if e is None:
            return ""
        return short(e.contribution) if e.contribution is not None else e.note or "—"

    return (Column("step", lambda t, s, e: str(s.index + 1), per_step=True),
            Column("node", lambda t, s, e: s.node, per_step=True),
            Column("op", op, per_step=True),
            Column("upstream", lambda t, s, e: short(s.upstream), per_step=True, right=True),
            Column("input", lambda t, s, e: e.input if e is not None else "—"),
            Column("local", local, right=True),
            Column("contribution", contribution, right=True))


def _save(trace: Trace, folder: Path, nodeid: str) -> str:
    """Write the trace as JSON and SVG; say where (or why the SVG could not be drawn)."""
    from .errors import BacktraceError
    from .render.formats import export

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = "it is a file, not a folder" if folder.exists() else exc.strerror or exc
        return f"could not save the trace in --backtrace-dir {folder}: {why}"
    stem = re.sub(r"[^\w.-]+", "_", nodeid).strip("_") or "trace"
    lines = []
    for suffix in ("json", "svg"):
        path = folder / f"{stem}.{suffix}"
        try:
            export(trace, path)
            lines.append(f"saved {path}")
        except BacktraceError as exc:
            lines.append(f"could not save {path}: {exc}")
        except Exception as exc:  # OSError, or a value the writer cannot handle
            lines.append(f"could not save {path}: {_one_line(exc)}")
    return "\n".join(lines)
