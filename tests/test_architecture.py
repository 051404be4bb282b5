"""The house rules of geosdm's code (issue 21): no import circles, no private module of one package used as a
seam by another, benchmarks on the public API only.

Everything here reads the source with ``ast`` (nothing is imported), so it runs in well under a second.
``python tests/test_architecture.py`` prints the import cycles (module-level, and with function-level imports).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geosdm"

#: Imports of another package's private module (or private name) that cannot be moved yet, with the reason.
#: Key: (importing file, imported module[.name]).
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}

#: Benchmarks that instrument internals on purpose (they measure what the public API hides).
ALLOWED_BENCHMARK: dict[tuple[str, str], str] = {
    ("benchmarks/cube_build.py", "geosdm.cube._load"):
        "counts the arrays odc-stac returns by wrapping the loader (_load_odc, _load_all_dates) inside the "
        "benchmark process: instrumentation of internals no public function exposes",
}


# ------------------------------------------------------------------------------------------- the import graph
def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def _type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it runs at import time (not in a function, not TYPE_CHECKING)."""

    def walk(node: ast.AST, deferred: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                continue  # annotations only: never executed
            d = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, not d
            yield from walk(child, d)

    yield from walk(tree, False)


def _targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, modules: dict) -> list[str]:
    """The geosdm modules an import statement loads (``from pkg import sub`` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in modules]
    if node.level:
        base = module.split(".")[: len(module.split(".")) - (0 if is_pkg else 1) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    out = []
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if sub in modules else target)
    return [t for t in out if t in modules]


def import_graph(*, deferred: bool) -> dict[str, set[str]]:
    """Module -> geosdm modules it imports; ``deferred`` adds the imports inside functions."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        deps: set[str] = set()
        for node, at_import in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if at_import or deferred:
                deps.update(_targets(name, is_pkg, node, modules))
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles_at_import_time() -> None:
    assert cycles(import_graph(deferred=False)) == []


def test_no_import_cycles_hidden_in_functions() -> None:
    # interactions.network <-> structure and models.calibration <-> intervals (and estimator <-> _grid /
    # calibration) were broken by moving code, not by deferring imports; keep it that way
    assert cycles(import_graph(deferred=True)) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# ------------------------------------------------------------------------------------- private seams
def _owner(parts: list[str]) -> str:
    """The top-level part of geosdm a module belongs to (``geosdm.predict.lazy`` -> ``predict``)."""
    return parts[1] if len(parts) > 1 else ""


def _private_uses(path: Path, user_owner: str) -> Iterator[str]:
    """``module`` or ``module.name`` for each import of a private module or name owned by another part."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "geosdm":
            parts = node.module.split(".")
            if _owner(parts) == user_owner:
                continue
            # geosdm._secrets, _yaml, ... are private to the root package, shared by all of it
            if any(p.startswith("_") for p in parts[2:]):
                yield node.module
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    yield f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "geosdm" and _owner(parts) != user_owner and any(p.startswith("_") for p in parts[2:]):
                    yield a.name


def test_no_package_imports_another_packages_private_module() -> None:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        owner = _owner([*rel.with_suffix("").parts])
        found.update((rel.as_posix(), used) for used in _private_uses(path, owner))
    assert sorted(found - set(ALLOWED_PRIVATE)) == []


def test_benchmarks_use_the_public_api() -> None:
    found = set()
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        found.update((path.relative_to(ROOT).as_posix(), used) for used in _private_uses(path, "benchmarks"))
    assert sorted(found - set(ALLOWED_BENCHMARK)) == []


def test_allowlists_are_not_stale() -> None:
    """Every allowed private use still exists (drop the entry once the import moves to the public name)."""
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        used.update((rel.as_posix(), u) for u in _private_uses(path, _owner([*rel.with_suffix("").parts])))
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        used.update((path.relative_to(ROOT).as_posix(), u) for u in _private_uses(path, "benchmarks"))
    assert sorted((set(ALLOWED_PRIVATE) | set(ALLOWED_BENCHMARK)) - used) == []


if __name__ == "__main__":
    for deferred in (False, True):
        print("with function-level imports" if deferred else "module-level imports",
              cycles(import_graph(deferred=deferred)) or "no cycles")
