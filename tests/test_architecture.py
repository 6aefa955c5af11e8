"""The package's layers, as docs/architecture.md draws them: what each part may import, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import radd_cli

PACKAGE = Path(radd_cli.__file__).parent
LIBRARY = {"core", "io", "data", "sampling", "evaluation", "training", "bench"}
BASICS = {"errors", "validation", "files", "console", "device"}

# What each part may import of radd's own (a part: a package, or a module directly in radd_cli/).
MAY_IMPORT = {
    "errors": set(),
    "validation": {"errors"},
    "files": {"errors"},
    "console": set(),
    "device": {"errors", "validation"},
    "core": {"errors", "validation"},
    "io": {"core", "device", "errors", "files", "validation"},
    "data": {"core", "io", "errors", "files", "validation"},
    "sampling": {"core", "io", "device", "errors", "validation"},
    "evaluation": {"core", "io", "data", "sampling", "device", "errors", "files", "validation"},
    "training": {"core", "io", "data", "sampling", "evaluation", "device", "console", "errors", "files", "validation"},
    "bench": LIBRARY - {"bench"} | BASICS,
    "serve": LIBRARY - {"training", "bench"} | BASICS,
    "commands": LIBRARY | BASICS | {"serve"},
    "cli": {"__init__", "commands", "console", "errors"},
    "lmeval": {"evaluation"},
    "__main__": {"cli"},
    "__init__": set(),  # the public API is imported lazily, by name
}
TOP_LEVEL_MODULES = {"__init__", "__main__", "cli", "errors", "validation", "files", "console", "device", "lmeval"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """radd's modules that `path` imports anywhere (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("radd_cli")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("radd_cli"):
            for alias in node.names:  # `from radd_cli.x import y` imports the module radd_cli.x.y when there is one
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found & set(MODULES)


def part_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_the_top_level_holds_the_packages_and_a_few_shared_modules():
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES, f"a module outside the packages: {sorted(top - TOP_LEVEL_MODULES)}"
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == LIBRARY | {"serve", "commands"}


def test_every_part_imports_only_the_parts_below_it():
    wrong = []
    for module, path in MODULES.items():
        mine = part_of(module)
        for imported in imported_modules(path):
            other = part_of(imported)
            if other != mine and other not in MAY_IMPORT[mine]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_no_import_cycles():
    graph = {module: imported_modules(path) - {module} for module, path in MODULES.items()}
    # a package's __init__ may import its own modules; a module importing its package's __init__ back is a cycle
    cycles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for nxt in sorted(graph[module]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt) :] + [nxt] if nxt in trail else [module, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_only_the_runtime_imports_accelerate():
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "accelerate" or name.startswith("accelerate.") for name in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"training/runtime.py"}


def test_the_library_names_no_command_line_flags():
    """Library errors name settings by field; the command line, the recipe loader and the server render them."""
    edges = ("commands/", "cli.py")
    flagged = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(edges):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if '"--' in line or "'--" in line or 'f"--' in line:
                flagged.append(f"{relative}:{number}: {line.strip()}")
    assert not flagged, flagged
