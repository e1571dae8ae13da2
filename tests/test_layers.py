"""The house in layers: every import in doitong_nb points to its own layer or a lower one, and no files import each
other in a circle (imports inside functions and under TYPE_CHECKING included: they are arrows too).

    L0 _contract, _version        the contract's constants, the version
    L1 _core                      pure: errors, redaction, settings table, request, result, steps, limits, polling
    L2 _wire                      GraphQL and REST formats, reply-to-error mapping, discovery queries, signatures
    L3 _engine, _store            flows as steps and the rules (quote, budget); files, journal, lock file, caches
    L4 _runtime                   Flux / AsyncFlux, loop thread, batch runner, receiver, settings resolution, login
    L5 _notebook, _tools          faces: magics, panel, display; CLI, doctor, verify, export
    L6 doitong_nb, .sandbox       the public surface (lazy names), and the sandbox's earlier name

The one exception: a result object's rich-display hook (`_repr_mimebundle_`, `_repr_html_`) imports the notebook's
display lazily, the way IPython asks objects to show themselves. The bundled server, `doitong_sandbox`, imports only
the contract, and only `_runtime.sandbox` (the one place that starts it) and the `sandbox` re-export import it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "_contract": 0,
    "_version": 0,
    "_core": 1,
    "_wire": 2,
    "_engine": 3,
    "_store": 3,
    "_runtime": 4,
    "_notebook": 5,
    "_tools": 5,
    "sandbox": 6,
}
DISPLAY_HOOKS = {  # the named exception: rich-display hooks of result objects
    ("doitong_nb._core.result", "doitong_nb._notebook.display"),
    ("doitong_nb._core.grid", "doitong_nb._notebook.display"),
}
SANDBOX_STARTERS = {"doitong_nb._runtime.sandbox", "doitong_nb.sandbox", "doitong_nb.sandbox.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of a module of doitong_nb: the package itself is the top."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 6


def modules(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """The modules a file imports, each submodule named as itself (`from doitong_nb import _contract` imports
    `doitong_nb._contract`, not the package's public surface)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            yield from submodules
            if len(submodules) < len(node.names):
                yield base


def graph(source: dict[str, Path], known: set[str]) -> dict[str, set[str]]:
    return {name: {t for t in imported(path, known) if t != name} for name, path in source.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of doitong_nb that points to a higher layer, but the named exception."""
    found = []
    for source, targets in edges.items():
        for target in targets:
            if target.startswith("doitong_sandbox") and source not in SANDBOX_STARTERS:
                found.append(f"{source} -> {target} (only _runtime.sandbox starts the sandbox)")
            if target.split(".")[0] != "doitong_nb" or (source, target) in DISPLAY_HOOKS:
                continue
            if layer(target) > layer(source):
                found.append(f"{source} (L{layer(source)}) -> {target} (L{layer(target)})")
    return sorted(found)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one file (Tarjan), the named exception's arrows left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in edges or (node, target) in DISPLAY_HOOKS:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    source = modules("doitong_nb")
    return graph(source, set(source))


def test_every_import_points_to_the_same_layer_or_a_lower_one(edges: dict[str, set[str]]) -> None:
    assert upward(edges) == []


def test_no_files_import_each_other_in_a_circle(edges: dict[str, set[str]]) -> None:
    assert circles(edges) == []


def test_the_sandbox_imports_only_the_contract() -> None:
    source = modules("doitong_sandbox")
    known = set(source) | set(modules("doitong_nb"))
    ours = {t for targets in graph(source, known).values() for t in targets if t.startswith("doitong_nb")}
    assert ours == {"doitong_nb._contract"}


def test_a_planted_upward_import_fails_the_rule(edges: dict[str, set[str]]) -> None:
    planted = {**edges, "doitong_nb._core.request": {*edges["doitong_nb._core.request"], "doitong_nb._runtime.client"}}
    assert upward(planted) == ["doitong_nb._core.request (L1) -> doitong_nb._runtime.client (L4)"]


def test_a_planted_circle_is_found(edges: dict[str, set[str]]) -> None:
    planted = {**edges, "doitong_nb._core.env": {"doitong_nb._core.keys"}}
    assert ["doitong_nb._core.env", "doitong_nb._core.keys"] in circles(planted)


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in modules("doitong_nb") if name.count(".") and name.split(".")[1] not in LAYERS]
    assert unplaced == []
