"""The package's shape: modules stay small and no module imports itself back through others."""

import ast
import pathlib

import keras_compress

SRC = pathlib.Path(keras_compress.__file__).parent
MAX_LINES = 500


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in _modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by job: {long}"


def _imports(name, path):
    """Every keras_compress module `name` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("keras_compress"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("keras_compress"):
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_module_import_cycle():
    # Modules only: a package's __init__ re-exports its modules, so an edge into
    # it says nothing about which module needs which (`from pkg import module` is kept).
    names = {name: path for name, path in _modules() if path.name != "__init__.py"}
    graph = {name: {m for m in _imports(name, path) if m in names and m != name} for name, path in names.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], cycles
