"""The package's imports flow one way: each module imports only from layers below its own
(README, Layout). Lazy imports inside functions count too."""

import ast
from pathlib import Path

import tellme

ROOT = Path(tellme.__file__).parent
LAYERS = [  # bottom first
    {"errors", "_core"},
    {"config", "runtime", "sampling"},
    {"rope", "kernels"},
    {"tokenizer"},
    {"constrain"},
    {"formats"},
    {"packed"},
    {"engine", "reference", "accel"},
    {"model"},
    {"loading", "scheduler", "hub"},
    {"server"},
    {"__init__", "__main__", "cli", "cli_accel", "bench", "train"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports(path: Path) -> set[str]:
    """tellme modules imported by `path`, as dotted names relative to the package."""
    here = path.relative_to(ROOT).with_suffix("").parts
    package = here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            names = [".".join(base + tuple(filter(None, [node.module])))]
            if not node.module:  # from . import x: a module, or a name from the package's __init__
                names = [".".join(base + (a.name,)) if ROOT.joinpath(*base, a.name).with_suffix(".py").exists()
                         or ROOT.joinpath(*base, a.name).is_dir() or a.name == "_core"
                         else ".".join(base + ("__init__",)) for a in node.names]
            found.update(n for n in names if n)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found.update(m.split(".", 1)[1] for m in mods if m.startswith("tellme."))
    return found


def test_imports_flow_one_way():
    wrong = []
    for path in ROOT.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        own = layer_of(module)
        for target in imports(path):
            if target.split(".")[0] != module.split(".")[0] and layer_of(target) > own:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        layer_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
