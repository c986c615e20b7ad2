"""No import cycles inside ``src/vlmkit``, and no module there imports the ``vlmkit`` facade: an
AST walk of every module's imports, including those inside functions (a deferred import is still a
cycle of dependencies) and ``importlib.import_module("...")`` calls with a literal name."""

from __future__ import annotations

import ast
from pathlib import Path

import vlmkit

PACKAGE_DIR = Path(vlmkit.__file__).parent


def _modules(package_dir: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under ``package_dir``."""
    out = {}
    for path in package_dir.rglob("*.py"):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``module`` imports: ``from pkg import sub`` counts as ``pkg.sub`` when that
    is a module, else as ``pkg``; parent packages are not counted."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return {name for name in names if name in known and name != module}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` for every module under ``package_dir``."""
    known = _modules(package_dir)
    return {module: _imported(module, path, known) for module, path in known.items()}


def import_cycles(package_dir: Path) -> list[list[str]]:
    """Every strongly connected group of two or more modules (each a cycle), sorted."""
    graph = import_graph(package_dir)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_vlmkit_has_no_import_cycles():
    cycles = import_cycles(PACKAGE_DIR)
    assert not cycles, "import cycles inside vlmkit:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_nothing_inside_vlmkit_imports_the_facade():
    importers = sorted(m for m, targets in import_graph(PACKAGE_DIR).items() if "vlmkit" in targets)
    assert not importers, f"these modules import the vlmkit facade instead of its modules: {importers}"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_finds_cycles_through_deferred_relative_and_importlib_imports(tmp_path):
    package = _package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import x\n",
        "pkg/a.py": "def x():\n    from pkg import b\n",
        "pkg/b.py": "from . import c\n",
        "pkg/c.py": "import importlib\nimportlib.import_module('pkg.a')\n",
        "pkg/sub/__init__.py": "from ..d import y\n",
        "pkg/d.py": "import pkg.sub\ny = 1\n",
        "pkg/e.py": "import pkg.a\nimport os\n",
    })  # fmt: skip
    assert import_cycles(package) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.d", "pkg.sub"]]


def test_a_package_that_imports_downward_has_none(tmp_path):
    package = _package(tmp_path, {
        "pkg/__init__.py": "from pkg.top import run\n",
        "pkg/top.py": "from pkg.low import helper\ndef run():\n    import pkg.low\n",
        "pkg/low.py": "import torch\nhelper = 1\n",
    })  # fmt: skip
    assert import_cycles(package) == []
