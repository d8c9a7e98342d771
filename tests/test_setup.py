"""`make setup` is idempotent: run again after `make test`'s own run, it installs nothing. The serving
set it installs first (requirements-serving.lock, what a Bento installs) pins what serving imports."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import typing as t
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import REPO_ROOT

# What the Makefile's install recipe runs; none of it may appear in a second run's output.
INSTALL_COMMANDS = ("pip install", " -m venv ")


def _installs(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(command in line for command in INSTALL_COMMANDS)]


def test_second_make_setup_installs_nothing():
    # Under `make test` (MAKELEVEL set) or in CI, setup has just run for this venv: it must be up to date.
    just_set_up = "MAKELEVEL" in os.environ or bool(os.environ.get("CI"))
    if shutil.which("make") is None or sys.prefix == sys.base_prefix:
        if just_set_up:
            pytest.fail("make setup must be checkable here: `make` and a virtual environment are required")
        pytest.skip("needs `make` and a virtual environment")
    # The venv running the tests is the one `make setup` manages (.venv in CI; a developer's may live elsewhere).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    command = ["make", "--no-print-directory", "-C", str(REPO_ROOT), f"VENV={sys.prefix}", "setup"]

    planned = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    if _installs(planned.stdout) and not just_set_up:
        # Never reinstall a developer's venv from a test: a lock newer than its stamp means setup is due.
        pytest.skip(f"{sys.prefix} is older than this checkout's lock files: run `make setup` (or `make test`)")
    assert _installs(planned.stdout) == [], f"make setup would install again:\n{planned.stdout}"

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _installs(done.stdout + done.stderr) == [], done.stdout + done.stderr
    # The offline weights step also found its checkpoint in place (and verified it) rather than copying.
    assert Path(sys.prefix, ".installed-stamp").is_file()


# The serving set (what a Bento and the container install) and the training set installed on top of it.
SERVING_LOCK = REPO_ROOT / "requirements-serving.lock"
TRAINING_LOCK = REPO_ROOT / "requirements.lock"
TRAINING_STACK = {"torch", "torchvision", "onnx", "transformers", "mlflow", "matplotlib"}
SOURCE = REPO_ROOT / "src"


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised: "psycopg[binary]>=3.3" -> "psycopg"."""
    return re.split(r"[=<>\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins(lock: Path) -> set[str]:
    """Normalised names of the distributions a lock file pins itself (not through its -r lines)."""
    lines = [line.strip() for line in lock.read_text().splitlines()]
    return {_name(line) for line in lines if line and not line.startswith(("#", "-r "))}


def _file_of(module: str) -> Path | None:
    path = SOURCE.joinpath(*module.split("."))
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def _imported_on_import(path: Path, module: str) -> set[str]:
    """What importing ``path`` imports: module scope and class bodies, not functions nor TYPE_CHECKING blocks."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.update([base, *(f"{base}.{alias.name}" for alias in child.names)])
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


LAZY_SERVING_MODULES = (
    "rakuten_classifier.modeling.text_loading",
    "rakuten_classifier.serving.observer",
    "rakuten_classifier.data.reader",
    "rakuten_classifier.modeling.image.onnx_runtime",
)


def _third_party_imported_by_the_service() -> set[str]:
    """Top-level names of the third-party modules that importing service.py imports, through the package."""
    third_party: set[str] = set()
    seen: set[str] = set()
    todo = [(REPO_ROOT / "service.py", "service")]
    # What each worker imports where it first needs it, not at module scope (docs/serving.md, "What each
    # worker imports"): the text model (text worker), the observer and the page's reader (entry),
    # the ONNX image model (image workers).
    for module in LAZY_SERVING_MODULES:
        todo.append((t.cast(Path, _file_of(module)), module))
    while todo:
        path, module = todo.pop()
        for name in _imported_on_import(path, module) - seen:
            seen.add(name)
            if (file := _file_of(name)) is not None:
                todo.append((file, name))
            elif name.split(".")[0] not in (*sys.stdlib_module_names, "rakuten_classifier"):
                third_party.add(name.split(".")[0])
    return third_party


def test_the_serving_lock_pins_what_serving_imports_and_no_training_stack():
    serving, training = _pins(SERVING_LOCK), _pins(TRAINING_LOCK)
    imported = _third_party_imported_by_the_service()
    assert {"bentoml", "numpy", "sklearn", "sqlalchemy", "PIL"} <= imported  # the walk reaches the package
    distributions = packages_distributions()
    needed = {d.lower().replace("_", "-") for name in imported for d in distributions.get(name, [name])}
    assert needed <= serving, f"imported by serving, not pinned in {SERVING_LOCK.name}: {sorted(needed - serving)}"
    assert not serving & TRAINING_STACK, sorted(serving & TRAINING_STACK)
    # The training set is installed on top of the serving one: each package pinned in one file only.
    assert "-r requirements-serving.lock" in TRAINING_LOCK.read_text().splitlines()
    assert training >= TRAINING_STACK
    assert not serving & training, sorted(serving & training)
    # pyproject.toml declares the same two sets: its dependencies are the serving set, its train extra the rest.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert {_name(r) for r in project["dependencies"]} <= serving
    assert {_name(r) for r in project["optional-dependencies"]["train"]} == TRAINING_STACK


SPARK_LOCK = REPO_ROOT / "requirements-spark.lock"


def _pin_lines(lock: Path) -> set[str]:
    return {line.strip() for line in lock.read_text().splitlines() if line.strip() and not line.startswith("#")}


def test_the_spark_extra_has_a_lock_of_its_own_that_make_setup_installs():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["spark"] == ["pyspark==4.3.0"]
    assert _pin_lines(SPARK_LOCK) == {"pyspark==4.3.0", "py4j==0.10.9.9"}  # pyspark and its one dependency
    assert not _pins(SPARK_LOCK) & (_pins(SERVING_LOCK) | _pins(TRAINING_LOCK))  # each package pinned once
    makefile = (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ")
    stamp_rule = next(line for line in makefile.splitlines() if line.startswith("$(STAMP):"))
    assert SPARK_LOCK.name in stamp_rule  # a changed lock reinstalls
    assert f"-r {SPARK_LOCK.name}" in makefile
