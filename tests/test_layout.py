"""The package's shape: every module imports; subpackages import only those before them in the
layer order of `osediff_jax/__init__.py` (so there are no cycles); README's public API imports."""

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import osediff_jax

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "osediff_jax"
LAYERS = ("files", "models", "weights", "data", "inference", "metrics", "training", "cli")


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(osediff_jax.__path__, "osediff_jax."))


def _layer(module: str) -> int:
    """Rank of a module's subpackage; the commands at the top level rank above every subpackage."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or parts[-1] in LAYERS else len(LAYERS)


def _imports(path: Path) -> set[str]:
    """Every osediff_jax module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("osediff_jax")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("osediff_jax"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in ALL else node.module for a in node.names}
    return found


ALL = set(_modules())


def test_every_module_imports():
    for name in _modules():
        importlib.import_module(name)
    assert {"osediff_jax.upscale", "osediff_jax.evaluate", "osediff_jax.convert", "osediff_jax.train"} <= ALL


def test_top_level_holds_only_commands():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == {"upscale", "evaluate", "convert", "train"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(LAYERS)


def test_no_import_points_up():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for target in _imports(path):
            if target != "osediff_jax" and _layer(target) > _layer(module):
                bad.append(f"{module} imports {target}")
            if _layer(module) < len(LAYERS) and _layer(target) == len(LAYERS):
                bad.append(f"{module} imports the command {target}")
    assert not bad, bad


def test_no_cycles():
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = {t for t in _imports(path) if t in ALL and t != module}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, " -> ".join(stack + [node, nxt])
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_every_subpackage_says_what_it_holds_and_may_import():
    for layer in LAYERS:
        doc = importlib.import_module(f"osediff_jax.{layer}").__doc__ or ""
        assert "import" in doc.lower() and all(name in doc for name in LAYERS[:LAYERS.index(layer)]), layer


def test_readme_public_api_imports():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Public API", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^- `(osediff_jax[\w.]*)`: (.+)$", section, flags=re.M)
    assert len(rows) >= 10, section
    for module, names in rows:
        mod = importlib.import_module(module)
        for name in re.findall(r"`(\w+)`", names):
            assert hasattr(mod, name), f"README lists {module}.{name}, which does not exist"
