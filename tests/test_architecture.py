"""The layout rules of the package, checked on its source: imports flow one way (no import circle,
imports inside functions included), and heavy packages load only where they are meant to, so
`import backtrace` and `backtrace --help` stay instant."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "backtrace"
HEAVY = ("torch", "graphviz", "matplotlib", "rich")
# Modules that may import a heavy package when they are imported (at their top level). Everything
# else imports them inside the function that needs them.
TOP_LEVEL = {
    "torch": ("backtrace.tracer.", "backtrace.torchcalls", "backtrace.training.watch",
              # what only the watch imports: its measuring, activations, ranks and steps
              "backtrace.training.measure", "backtrace.training.activations",
              "backtrace.training.ranks", "backtrace.training.stepping",
              "backtrace.training.params"),
    "rich": ("backtrace.render.tables", "backtrace.render.terminal", "backtrace.render.torch_table",
             "backtrace.render.ops_view", "backtrace.render.console"),
    "graphviz": (),
    "matplotlib": (),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """Every module `name` imports (names inside backtrace resolved to the module that defines
    them), from anywhere in the file or only from its top level."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:  # `from . import tables` imports the submodule tables
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return found


def graph() -> dict[str, set[str]]:
    """backtrace module -> the backtrace modules it imports."""
    return {m: {i for i in imports(m) if i in MODULES and i != m} for m in MODULES}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, with an explicit stack)."""
    index, low, on, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                    break
                if nxt in on:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_counting_imports_inside_functions():
    assert cycles(graph()) == []


def test_the_trace_imports_no_renderer_and_folding_no_dot_code():
    edges = graph()
    assert not {m for m in edges["backtrace.traces"] if m.startswith("backtrace.render")}
    assert "backtrace.render.dot" not in edges["backtrace.fold"]
    engines = ("backtrace.engine", "backtrace.torch_engine", "backtrace.value", "backtrace.parser",
               "backtrace.ir", "backtrace.ops")
    for m in engines:  # renderers never see engines, and engines know no renderer
        assert not {i for i in edges[m] if i.startswith(("backtrace.render", "backtrace.cli"))}, m
    for m in (m for m in MODULES if m.startswith("backtrace.render")):
        assert not edges[m] & set(engines[:3]), m


@pytest.mark.parametrize("name", sorted(MODULES))
def test_heavy_packages_are_imported_at_top_level_only_where_meant(name):
    tops = {i.split(".")[0] for i in imports(name, top_level_only=True)}
    for heavy in HEAVY:
        if heavy in tops:
            assert name.startswith(TOP_LEVEL[heavy]), f"{name} imports {heavy} at top level"


def test_import_and_help_load_no_heavy_package():
    code = ("import sys, backtrace, backtrace.cli\n"
            "from backtrace.cli import cli\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "for c in ('explain', 'render', 'trace', 'train', 'descend', 'ops'):\n"
            "    cli.get_command(None, c)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
