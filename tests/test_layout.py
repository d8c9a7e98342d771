"""The package's architecture, checked from its source: no import cycle, serving imports no training code,
pyspark only in the spark package, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOT = REPO_ROOT / "src" / "rakuten_classifier"
PACKAGE = "rakuten_classifier"
# Training code: what fits models. The service may start a training job (serving.jobs spawns a
# process and reads its status file, pipeline.job_status) but must never import these.
TRAINING_MODULES = {
    f"{PACKAGE}.pipeline.steps",
    f"{PACKAGE}.pipeline.retrain",
    f"{PACKAGE}.pipeline.job_runner",
    f"{PACKAGE}.pipeline.training_data",
    f"{PACKAGE}.modeling.image.training",
    f"{PACKAGE}.modeling.image.finetune",
    f"{PACKAGE}.modeling.image.head",
    f"{PACKAGE}.modeling.linear_head",
    f"{PACKAGE}.modeling.fusion_fitting",
    f"{PACKAGE}.modeling.fusion_selection",
    f"{PACKAGE}.modeling.text_encoder_fitting",
    f"{PACKAGE}.modeling.text_encoder_onnx",
    f"{PACKAGE}.modeling.text_cross_fit",
    f"{PACKAGE}.modeling.text_transformer_fitting",
    f"{PACKAGE}.modeling.tfidf_cross_fit",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def _imports(path: Path, name: str) -> set[str]:
    """Package modules imported anywhere in a file (function-level imports included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in MODULES and target != name}
    return found


GRAPH = {name: _imports(path, name) for name, path in MODULES.items()}


def _reachable(start: set[str]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(GRAPH.get(module, ()))
    return seen


def test_the_package_has_at_least_four_sub_packages():
    assert len([p for p in PACKAGE_ROOT.iterdir() if (p / "__init__.py").is_file()]) >= 4


def test_no_import_cycle_among_the_package_modules():
    cycles = [
        (module, other)
        for module in GRAPH
        for other in GRAPH[module]
        if module in _reachable({other}) and module != other
    ]
    # A package's __init__ importing its own sub-modules is not a cycle we care about; there are none here.
    assert not cycles, f"import cycles: {sorted(cycles)[:10]}"


def test_serving_imports_no_training_code():
    service_imports = _imports(REPO_ROOT / "service.py", "service")
    serving = {name for name in MODULES if name.startswith(f"{PACKAGE}.serving")}
    reached = _reachable(service_imports | serving)
    assert not reached & TRAINING_MODULES, sorted(reached & TRAINING_MODULES)
    assert f"{PACKAGE}.pipeline.job_status" in reached  # the graph is real: the job manager's status file is found


def test_no_module_over_400_lines():
    """One check over every module (service.py: 300 lines), naming each file over its limit at once."""
    files = sorted([*PACKAGE_ROOT.rglob("*.py"), REPO_ROOT / "service.py"])
    assert len(files) > 50  # the walk found the package
    limits = {path: 300 if path.name == "service.py" else 400 for path in files}
    lines = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in files}
    over = [
        f"{path.relative_to(REPO_ROOT)}: {lines[path]} lines (limit {limits[path]})"
        for path in files
        if lines[path] > limits[path]
    ]
    if over:  # pytest.fail: an assertion's message would be cut after a few lines
        pytest.fail("modules over their line limit:\n" + "\n".join(over), pytrace=False)


def test_the_text_model_imports_nothing_of_the_image_model():
    text = {name for name in MODULES if name.startswith(f"{PACKAGE}.modeling.text")}
    assert text
    image = {name for name in _reachable(text) if name.startswith(f"{PACKAGE}.modeling.image")}
    assert not image, sorted(image)


def _third_party(path: Path) -> set[str]:
    """Top-level names of what a file imports anywhere (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_spark_package_imports_pyspark_and_only_the_command_line_reaches_it():
    spark = {name for name in MODULES if name.startswith(f"{PACKAGE}.spark")}
    importing_pyspark = {name for name, path in MODULES.items() if "pyspark" in _third_party(path)}
    assert f"{PACKAGE}.spark.session" in importing_pyspark  # the scan is real
    assert importing_pyspark <= spark, sorted(importing_pyspark - spark)
    assert "pyspark" not in _third_party(REPO_ROOT / "service.py")
    # The spark extra is optional: the command line imports it lazily, for --engine spark, and nothing else does.
    assert {name for name in GRAPH if GRAPH[name] & spark} - spark == {f"{PACKAGE}.cli"}
    serving = {name for name in MODULES if name.startswith(f"{PACKAGE}.serving")}
    assert not _reachable(_imports(REPO_ROOT / "service.py", "service") | serving) & spark
