"""The import rule that keeps serving torch-free: no module of bot/, and none of model/'s torch-free modules,
imports torch (or a model module that needs it) at module level. Inside a function is fine: that is how the
torch backend loads only where it serves (model/engines.py). Checked on the source (AST), so it holds for any
code path a test does not happen to run; tests/bot/test_e2e_no_torch.py checks a running bot."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What loads torch when imported. ``from model import X`` loads it for the names model/__init__.py loads lazily.
TORCH_MODULES = ("torch", "torchvision", "training", "model.torch_engine", "model.predict", "model.runtime",
                 "model.checkpoint", "model.occlusion", "model.network", "model.precision", "model.incremental",
                 "model.incremental_plan", "model.fold", "model.graph", "model.export", "model.openvino_runtime")
TORCH_FREE_MODEL = ("__init__", "choices", "engine", "engines", "errors", "export_manifest", "memory", "occlusion_grid",
                    "occlusion_result", "openvino_engine", "precision_rule", "prediction", "preprocess", "render", "threads")
KNOWN: dict[str, str] = {}  # a serving module that still imports torch at module level, and why (none now)


def lazy_torch_names() -> set[str]:
    tree = ast.parse((REPO / "model" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_WHERE" for t in node.targets):
            return {key.value for key in node.value.keys}
    return set()


def module_level_imports(path: Path, root: Path = REPO) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of the imports a module runs when it is imported (not under ``if TYPE_CHECKING``)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def torch_imports(path: Path, root: Path = REPO) -> list[str]:
    lazy = lazy_torch_names()
    bad = []
    for line, module, names in module_level_imports(path, root):
        if any(module == m or module.startswith(m + ".") for m in TORCH_MODULES):
            bad.append(f"{path.relative_to(root)}:{line} imports {module}")
        elif module == "model" and lazy & set(names):
            bad.append(f"{path.relative_to(root)}:{line} imports {sorted(lazy & set(names))} from model (loads torch)")
    return bad


SERVING_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "bot").glob("*.py")) + [
    f"model/{name}.py" for name in TORCH_FREE_MODEL if (REPO / "model" / f"{name}.py").is_file()]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN[n], strict=True)) if n in KNOWN
                                  else n for n in SERVING_FILES])
def test_serving_modules_import_no_torch_at_module_level(name):
    assert torch_imports(REPO / name) == []


def test_the_rule_finds_a_torch_import(tmp_path):
    sample = tmp_path / "bot" / "probe.py"
    sample.parent.mkdir()
    sample.write_text("import os\nfrom model import Classifier\nfrom .scheduler import x\nfrom model.runtime import prepare_model\n"
                      "def later():\n    import torch\n")
    found = torch_imports(sample, tmp_path)
    assert len(found) == 2 and "Classifier" in found[0] and "model.runtime" in found[1]
