"""The package's shape, read from its imports: subpackages depend one way and no module imports itself
back through others. Every import counts, those inside functions too (a lazy import is still an arrow).

    core (errors, project, credentials, processes)  <-  run  <-  launch  <-  search
                                              ^                      ^
                                              +------  review  ------+
    joiners (app, callbacks, cli, rerun, the hydra_plugins fronts) may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = {"cnnsweep", "cnnsweep.errors", "cnnsweep.project", "cnnsweep.credentials", "cnnsweep.processes"}
JOINERS = {"cnnsweep.app", "cnnsweep.callbacks", "cnnsweep.cli", "cnnsweep.rerun"}
# Which layers each layer may import (besides itself).
ALLOWED = {
    "core": set(),
    "run": {"core"},
    "launch": {"core", "run"},
    "search": {"core", "run", "launch"},
    "review": {"core", "run", "search"},
}


def layer(module: str) -> str:
    if module in CORE:
        return "core"
    if module in JOINERS or module.startswith("hydra_plugins") or module == "run":
        return "joiner"
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "cnnsweep" and parts[1] in ALLOWED:
        return parts[1]
    return "unknown"


def modules() -> dict[str, Path]:
    found = {"run": SRC / "run.py"}
    for path in [*(SRC / "cnnsweep").rglob("*.py"), *(SRC / "hydra_plugins").rglob("*.py")]:
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The project modules `path` imports, with the line of each import."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports the module; `from module import name` the module itself
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name in known:
                yield name, node.lineno


def graph() -> dict[str, dict[str, int]]:
    found = modules()
    return {name: dict(imports(path, set(found))) for name, path in found.items()}


def test_every_module_belongs_to_a_layer() -> None:
    unknown = [name for name in modules() if layer(name) == "unknown"]
    assert not unknown, f"modules outside every layer (put them in a subpackage, or list them here): {unknown}"


@pytest.mark.parametrize("importer_layer", sorted(ALLOWED))
def test_imports_go_one_way(importer_layer: str) -> None:
    wrong = [
        f"{importer} (line {line}) imports {imported} ({layer(imported)})"
        for importer, imported_modules in graph().items() if layer(importer) == importer_layer
        for imported, line in imported_modules.items()
        if layer(imported) not in ALLOWED[importer_layer] | {importer_layer}
    ]
    assert not wrong, "arrows against the layers' direction:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = {module: set(imported) - {module} for module, imported in graph().items()}
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(edges[module]):
            if imported.startswith("cnnsweep") and module.startswith(imported + "."):
                continue  # a module's own package __init__ runs first anyway; not a cycle of code
            if state.get(imported) == "open":
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_checker_sees_a_wrong_arrow_and_a_cycle(tmp_path: Path) -> None:
    """The rules above, applied to a made-up module pair: a run module importing the launcher is caught."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from cnnsweep.launch.contract import TrialJob\n")
    found = dict(imports(module, {"cnnsweep.launch.contract"}))
    assert found == {"cnnsweep.launch.contract": 2}
    assert layer("cnnsweep.launch.contract") not in ALLOWED["run"]
