"""The layering guard of documentation/architecture.md: every import inside covtransfer (module level, under
TYPE_CHECKING or inside a function alike) goes to the same or a lower layer, and no modules import each other in a
circle."""

import ast
from pathlib import Path

import covtransfer

PACKAGE = Path(covtransfer.__file__).resolve().parent
FOUNDATION = {"covtransfer", "covtransfer.atomic", "covtransfer.config", "covtransfer.devices", "covtransfer.errors"}
LAYERS = ["data", "plans", "planning", "preprocessing", "network", "evaluation", "inference", "models", "training", "workflow",
          "experiments", "cli"]
LAYER_OF = {"datasets": "data"}  # the raw datasets (converters, synthetic phantoms) sit with the data layer


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("covtransfer",) + path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's covtransfer modules it imports (``from pkg import module`` counts as the module)."""
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "covtransfer"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == "covtransfer":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
        graph[name] = targets - {name}
    return graph


def _layer(module: str) -> int:
    """The layer index of a module; -1 for the foundation every layer may import."""
    if module in FOUNDATION:
        return -1
    top = module.split(".")[1]
    return LAYERS.index(LAYER_OF.get(top, top))


def test_every_module_belongs_to_a_layer():
    for module in _modules():
        _layer(module)


def test_no_import_goes_up_a_layer():
    graph = _imports(_modules())
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets if _layer(b) > _layer(a)]
    assert upward == []


def test_no_import_circle():
    graph = _imports(_modules())
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
