"""The floor plan: each layer of the package imports only the layers below it, and every import sits at the top of
its module (an import inside a function hides a dependency), except optional heavy dependencies."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolojax"

# what each layer may import (besides itself); the data flow is data -> model -> assign -> loss -> step -> eval
ALLOWED = {
    "cache": set(),
    "xla_flags": {"cache"},
    "conv_tuning": set(),
    "configs": set(),
    "ops": set(),
    "assign": {"ops"},
    "models": {"ops"},
    "losses": {"ops", "assign"},
    "detectors": {"ops", "assign", "models", "losses"},
    "data": {"cache", "ops", "configs"},
    "train": {"cache", "ops", "assign", "models", "losses", "detectors", "data", "configs", "xla_flags"},
    "eval": {"cache", "ops", "models", "detectors", "data", "configs", "convert", "xla_flags"},
    "convert": {"ops", "models"},
    "export": {"cache", "ops", "models", "detectors", "eval", "convert", "xla_flags"},
    "bench": {"cache", "ops", "assign", "models", "losses", "detectors", "data", "train", "configs", "xla_flags"},
    "cli": {"cache", "ops", "assign", "models", "losses", "detectors", "data", "train", "eval", "convert", "export",
            "bench", "configs", "xla_flags", "conv_tuning"},
    "api": {"cache", "ops", "assign", "models", "losses", "detectors", "data", "train", "eval", "convert", "bench",
            "export", "cli", "configs", "xla_flags"},
}
# imported where they are used, so that the package works without them (extras) or stays quick to import
OPTIONAL = {"torch", "torchvision", "ultralytics", "tensorboard", "tensorflow_datasets", "tensorflow",
            "albumentations", "pycocotools", "matplotlib", "onnx", "onnxruntime", "jax2onnx", "safetensors",
            "tqdm", "absl", "PIL", "tensorboardX"}


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else ""


def imports(tree: ast.AST):
    """(imported module name, inside a function?) for every import statement."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                yield from ((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module, in_function
            yield from visit(child, inside)
    return list(visit(tree, False))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_layer_imports_only_the_layers_below_it(path):
    layer = layer_of(path)
    if not layer:
        return
    assert layer in ALLOWED, f"{path}: layer {layer!r} has no entry in ALLOWED"
    for name, _ in imports(ast.parse(path.read_text())):
        parts = name.split(".")
        if parts[0] != "yolojax" or len(parts) < 2 or parts[1] == layer:
            continue
        assert parts[1] in ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {name}: {layer} may import only " \
                                           f"{sorted(ALLOWED[layer])}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_sit_at_the_top_except_optional_heavy_dependencies(path):
    inside = [name for name, in_function in imports(ast.parse(path.read_text()))
              if in_function and name.split(".")[0] not in OPTIONAL]
    assert not inside, f"{path.relative_to(PACKAGE)} imports inside functions: {inside}"
