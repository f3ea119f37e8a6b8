"""Hostile input: every line of tests/data/hostile_formulas.txt fails with its own error class,
through the API and the CLI, and the package never hands user text to eval, exec or friends."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

import backtrace
from backtrace import errors
from backtrace.cli import cli

CORPUS = Path(__file__).parent / "data" / "hostile_formulas.txt"


def corpus() -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").split("\n"):
        if not line or line.startswith("#"):
            continue
        cls, formula, values = (line.split("\t") + [""])[:3]
        pairs = dict(v.split("=") for v in values.split()) if values else {}
        rows.append((cls, formula.replace("\\n", "\n"), {k: float(v) for k, v in pairs.items()}))
    return rows


ROWS = corpus()


def test_corpus_is_big_enough():
    assert len(ROWS) >= 150
    assert {cls for cls, _, _ in ROWS} == {"FormulaSyntaxError", "LimitError", "DomainError",
                                           "MissingValueError", "UsageError"}


@pytest.mark.parametrize("cls,formula,values", ROWS, ids=[f"{i}" for i in range(len(ROWS))])
def test_api_raises_the_expected_class(cls, formula, values):
    with pytest.raises(errors.BacktraceError) as err:
        backtrace.explain(formula, **values)
    assert type(err.value).__name__ == cls, str(err.value)
    assert "\n" not in str(err.value)  # one line


@pytest.mark.parametrize("cls,formula,values", ROWS, ids=[f"{i}" for i in range(len(ROWS))])
def test_cli_answers_with_one_line_and_the_class_exit_code(cls, formula, values):
    args = ["explain", formula, "--engine", "reference"] if _has_engine_option() else ["explain", formula]
    args += [f"{k}={v!r}" for k, v in values.items()]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == getattr(errors, cls).exit_code, result.output
    assert result.output.startswith("error: ")
    assert "Traceback" not in result.output


def _has_engine_option() -> bool:
    from backtrace.cli.explain import explain

    return any(p.name == "engine" for p in explain.params)


REFUSED_CALLS = {"eval", "exec", "compile", "__import__"}
REFUSED_MODULES = {"pickle", "marshal", "shelve"}


def test_package_never_evaluates_text():
    """Scan every module's syntax tree for calls that could execute user text."""
    root = Path(backtrace.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in REFUSED_CALLS:
                found.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = {a.name.split(".")[0] for a in node.names}
                if isinstance(node, ast.ImportFrom) and node.module:
                    names.add(node.module.split(".")[0])
                found += [f"{path.name}:{node.lineno} import {n}" for n in names & REFUSED_MODULES]
    assert found == []
