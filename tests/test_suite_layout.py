"""The test suite cannot shadow an installed module.

pytest's default import mode puts the first directory above a test file that has no
``__init__.py`` on ``sys.path``; a test package there named like an installed module (a
``tests/kernels`` beside the ``kernels`` package that transformers imports) then replaces that
module for the whole run. vlmkit's tests are one ``tests`` package imported in pytest's
``importlib`` mode, so ``tests/kernels`` is ``tests.kernels`` and nothing is added to ``sys.path``.
These tests keep it so: the mode is set, no test directory is on ``sys.path``, and no name the
suite could occupy at the top level is also importable from the environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_ROOTS = [REPO / "tests", *sorted(REPO.glob("plugins/*/tests"))]


def top_level_names() -> set[str]:
    """Names the suite's files would take as top-level modules if their directories were put on
    ``sys.path``: each test root that is a package, and each module of a root that is not."""
    names = set()
    for root in TEST_ROOTS:
        if (root / "__init__.py").is_file():
            names.add(root.name)
        else:
            names.update(path.stem for path in root.glob("*.py"))
            names.update(p.parent.name for p in root.glob("*/__init__.py"))
    return names


def test_pytest_imports_test_modules_in_importlib_mode(pytestconfig):
    assert pytestconfig.getoption("importmode") == "importlib"


def test_no_test_directory_is_on_sys_path():
    roots = [root.resolve() for root in TEST_ROOTS]
    on_path = [
        entry
        for entry in sys.path
        if entry and any(Path(entry).resolve().is_relative_to(root) for root in roots)
    ]
    assert not on_path, f"test directories on sys.path: {on_path}"


def test_no_name_of_the_suite_is_importable_from_the_environment():
    # An isolated interpreter (-I: no current directory, no PYTHONPATH) sees only what is
    # installed; any of the suite's names it finds would be shadowed by, or shadow, the tests.
    names = sorted(top_level_names())
    assert "tests" in names
    script = (
        "import importlib.util, json, sys\n"
        "names = json.loads(sys.argv[1])\n"
        "print(json.dumps({n: getattr(importlib.util.find_spec(n), 'origin', None)"
        " for n in names if importlib.util.find_spec(n) is not None}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, json.dumps(names)],
        cwd="/", capture_output=True, text=True, check=True,
    )
    found = json.loads(proc.stdout)
    assert not found, f"names of the test suite that installed modules also have: {found}"
