"""The package's architecture, checked: layers import only downwards, no import cycle, no
private name crosses a module, every public module says its job in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "itmfilter"

# Lowest first. A module may import from its own layer or any layer below it.
LAYERS = [
    {"errors", "progress", "limits", "cluster"},
    {"colour"},
    {"media"},
    {"data"},
    {"model"},
    {"track"},
    {"quality"},
    {"render"},
    {"encode", "transcode", "player"},
    {"demo", "api", "catalogue"},
    {"cli", "__init__", "__main__"},
]


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1] if len(parts) > 1 else parts
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path):
    """``(imported module, imported names)`` for every import statement, nested ones too."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]


def _resolve(target: str, names: list[str], modules: dict) -> list[tuple[str, list[str]]]:
    """Internal modules an import reaches (``from pkg import submodule`` counts as the
    submodule) with the names taken from each."""
    if not target.startswith("itmfilter"):
        return []
    out = []
    plain = []
    for name in names:
        if f"{target}.{name}" in modules:
            out.append((f"{target}.{name}", []))
        else:
            plain.append(name)
    if plain or not names:
        out.append((target, plain))
    return out


def _graph():
    modules = _modules()
    edges = {}
    for module, path in modules.items():
        for target, names in _imports(module, path):
            for dep, taken in _resolve(target, names, modules):
                if dep != module:
                    edges.setdefault(module, {}).setdefault(dep, []).extend(taken)
    return modules, edges


def test_layers_import_only_downwards():
    _, edges = _graph()
    upward = [f"{m} -> {d}" for m, deps in edges.items() for d in deps if _layer(d) > _layer(m)]
    assert not upward, "imports from a layer above:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    modules, edges = _graph()
    # package __init__ files that only re-export their own submodules are not cycles
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in edges.get(node, {}):
            if dep not in modules:
                continue
            if node.startswith(dep + ".") or dep.startswith(node + "."):
                continue  # a package and its own submodules
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_name_crosses_a_module():
    _, edges = _graph()
    crossing = [f"{m} takes {d}.{n}" for m, deps in edges.items() for d, names in deps.items()
                for n in names if n.startswith("_") and not n.startswith("__")]
    assert not crossing, "\n".join(sorted(crossing))


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_opens_with_a_docstring(module):
    path = _modules()[module]
    doc = ast.get_docstring(ast.parse(path.read_text()))
    if path.name == "__init__.py" and module.endswith("assets"):
        return  # package data, no code
    assert doc and doc.strip(), f"{path} has no module docstring"
