"""Data flows one way: no import cycle between autopeft's sub-packages and top-level modules.

Every import counts, those inside functions too (a lazy import is how a cycle hides). The graph's
nodes are the package's units: a sub-package (``autopeft.methods``) or a top-level module
(``autopeft.study``); an edge A -> B means some module of A imports some module of B.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autopeft"


def unit_of(module: str) -> str | None:
    """``autopeft.methods.lora`` -> ``methods``; ``autopeft`` itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "autopeft" else None


def imported_modules(path: Path, module: str) -> set[str]:
    """Absolute names of the autopeft modules a file imports (relative imports resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {
                f"{base}.{alias.name}"
                for alias in node.names
                if (PACKAGE.parent / base.replace(".", "/") / f"{alias.name}.py").exists()
            }
    return {name for name in found if name == "autopeft" or name.startswith("autopeft.")}


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the files of the first unit that import the second."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        source = unit_of(module)
        for name in imported_modules(path, module):
            target = unit_of(name)
            if source and target and target != source:
                graph[source][target].append(str(path.relative_to(PACKAGE.parent)))
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_units():
    graph = unit_graph()
    found = cycles(graph)
    detail = [
        f"{' <-> '.join(c)}: " + "; ".join(f"{a}->{b} in {graph[a][b][0]}" for a in c for b in c if b in graph[a])
        for c in found
    ]
    assert not found, "\n".join(detail)


NEVER = [
    ("methods", "training"),
    ("methods", "space"),
    ("study", "execution"),
    ("study", "tracking"),
    ("keys", "study"),
    ("runs_dir", "study"),
    ("pareto", "study"),
]
"""(lower, upper): the lower unit never imports the upper one."""


@pytest.mark.parametrize("lower, upper", NEVER)
def test_lower_layers_do_not_import_upper_ones(lower, upper):
    files = unit_graph()[lower].get(upper, [])
    assert not files, f"{lower} imports {upper}: {files}"


def test_nothing_in_the_library_imports_the_command_line():
    """``autopeft/cli/`` is the top floor: it calls the library, the library never calls it."""
    graph = unit_graph()
    importers = {unit: files for unit, targets in graph.items() for files in [targets.get("cli", [])] if files}
    assert not importers, f"imported by the library: {importers}"


def test_the_ground_floor_modules_import_nothing_of_autopeft_above_them():
    """Stored keys, the runs folder's layout and the errors are read by every floor."""
    graph = unit_graph()
    for unit in ("keys", "errors", "runs_dir"):
        assert not graph[unit], f"{unit} imports {dict(graph[unit])}"


def test_the_check_sees_a_cycle_and_a_lazy_import(tmp_path):
    """The checker itself: a function-level import closing a loop is found."""
    graph = {"a": {"b": ["a.py"]}, "b": {"c": ["b.py"]}, "c": {"a": ["c.py"]}, "d": {"a": ["d.py"]}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "autopeft" / "m.py"
    source.parent.mkdir()
    source.write_text("def f():\n    from autopeft.training import proxy\n")
    assert "autopeft.training" in imported_modules(source, "autopeft.m")


def test_training_a_fixed_configuration_needs_no_optuna_ray_or_mlflow():
    """What the fidelity bench runs (a GPU machine lent without them runs it): training, export, tasks, budget."""
    import subprocess
    import sys

    code = (
        "import sys, autopeft, autopeft.training, autopeft.export, autopeft.budget, autopeft.tasks; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('optuna', 'ray', 'mlflow')}))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert found == "[]", found
