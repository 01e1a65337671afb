"""The shape of the library: no import cycles, no unused names, one training loop that stays short."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hybridlib"


def imports_of(path: Path) -> set[str]:
    """hybridlib modules imported anywhere in a module (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from . import x
                names = [node.module] if node.module else [alias.name for alias in node.names]
                found.update(name.split(".")[0] for name in names)
            elif node.module and node.module.startswith("hybridlib."):
                found.add(node.module.split(".")[1])
            elif node.module == "hybridlib":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("hybridlib."))
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return (found & modules) - {path.stem}


def test_no_module_imports_one_that_imports_it_back():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    cycles = []

    def visit(module, stack):
        for target in sorted(graph[module]):
            if target in stack:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in done:
                visit(target, stack + [target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_pyflakes_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "pyflakes", "hybridlib", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


def test_training_loop_body_is_short():
    """train() reads like nanoGPT's loop: the step function is chosen before it, so the loop stays short."""
    from hybridlib import train

    source = inspect.getsource(train.train)
    body = source[source.index("    try:\n"):source.index("    return records")]
    lines = [line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 60, len(lines)
