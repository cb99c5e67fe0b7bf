"""The agent's pieces stay pieces: no import cycle among them, no reaching into another object's private fields."""

from __future__ import annotations

import ast
from pathlib import Path

import workers

WORKERS = Path(workers.__file__).parent
PIECES = [*sorted((WORKERS / "agent").glob("*.py")), WORKERS / "sampler.py", WORKERS / "client.py"]


def _module(path: Path) -> str:
    return ".".join(path.relative_to(WORKERS.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_import_cycle_among_the_agents_pieces() -> None:
    graph = {_module(p): {m for m in _imports(p) if m.startswith("workers.")} for p in PIECES}
    # __init__ only re-exports node: importing a piece pulls in the package's __init__ first.
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_no_piece_reads_another_objects_private_fields() -> None:
    offences = []
    for path in PIECES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                offences.append(f"{path.name}:{node.lineno}: .{node.attr}")
    assert offences == []


def test_every_piece_says_why_it_exists() -> None:
    for path in PIECES:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 80, f"{path.name} needs a module docstring that says what it is for"
