"""The shape of the library: stages that only import downwards, no import cycles, no unused names, a light
command line, one training loop that stays short (docs/architecture.md, "Stages")."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hybridlib"

# The stages in the order the data flows; a module may import its own stage and the ones before it. Level 0 is
# the top-level helpers every stage may use; the entry-point modules at the top level sit above everything.
STAGES = {"data": 1, "models": 2, "training": 3, "evaluation": 4, "analysis": 5, "runs": 6}
ENTRY_POINTS = {"hybridlib.sweep", "hybridlib.experiment", "hybridlib.launch"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imports_of(path: Path, known: set[str], package: Path = PACKAGE) -> set[str]:
    """The hybridlib modules a module imports anywhere (top level or inside functions), relative ones resolved."""
    name = module_name(path, package)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:  # hybridlib.data.benchmarks.X -> the module that has X
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def level(module: str) -> int:
    if module in ENTRY_POINTS:
        return 99
    parts = module.split(".")
    return STAGES.get(parts[1], 0) if len(parts) > 1 else 0


def graph_of(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = modules_of(package)
    return {name: imports_of(path, set(modules), package) for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} imports {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
            if level(b) > level(a) and b != "hybridlib"]


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, done = [], set()

    def visit(module, stack):
        for target in sorted(graph.get(module, ())):
            if target in stack:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in done:
                visit(target, stack + [target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return cycles


def test_the_tree_has_one_folder_per_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(STAGES)
    graph = graph_of()
    assert len(graph) > 40 and all(level(m) == STAGES[m.split(".")[1]] for m in graph if m.count(".") >= 2)


def test_no_stage_imports_a_later_one():
    assert not upward_imports(graph_of())


def test_no_module_imports_one_that_imports_it_back():
    assert not cycles_of(graph_of())


def _planted(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "hybridlib"
    for rel, text in {"__init__.py": "", "data/__init__.py": "", "runs/__init__.py": "", **files}.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    return package


def test_the_checks_find_a_planted_upward_import_and_a_planted_cycle(tmp_path):
    """The checks above would pass on any tree they cannot read: show them failing on planted faults."""
    package = _planted(tmp_path, {
        "data/sampler.py": "from ..runs.sweep import main\n",  # upward, relative
        "runs/sweep.py": "def main(): from hybridlib.data import sampler\n",  # back down: a cycle
        "cache.py": "import hybridlib.data.sampler\n",  # a helper importing a stage
    })
    graph = graph_of(package)
    assert upward_imports(graph) == ["hybridlib.cache imports hybridlib.data.sampler",
                                     "hybridlib.data.sampler imports hybridlib.runs.sweep"]
    assert ["hybridlib.data.sampler", "hybridlib.runs.sweep", "hybridlib.data.sampler"] in cycles_of(graph)


def test_pyflakes_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "pyflakes", "hybridlib", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("command", [["-m", "hybridlib.sweep", "--help"],
                                     ["-c", "import hybridlib.runs.config, hybridlib.runs.runlock"]])
def test_the_command_line_and_the_parameters_do_not_import_torch(command):
    """``--help``, ``--dry-run`` and the run lock read only the light parameter contract (hybridlib.parameters)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "hybridlib.runs.config" in imported or "hybridlib.runs.sweep" in imported
    assert not imported & {"torch", "transformers", "datasets"}, sorted(imported & {"torch", "transformers"})


def test_the_moved_names_of_0_1_still_import_as_the_same_modules():
    import pickle

    import hybridlib.model
    import hybridlib.models.bi_encoder
    from hybridlib import launch
    from hybridlib.data import NEGATIVE_COLUMNS, load_benchmark  # the 0.1 hybridlib.data names
    from hybridlib.data import benchmarks
    from hybridlib.runs import slurm

    assert hybridlib.model is hybridlib.models.bi_encoder
    assert (load_benchmark, NEGATIVE_COLUMNS) == (benchmarks.load_benchmark, benchmarks.NEGATIVE_COLUMNS)
    assert launch.SlurmRun is slurm.SlurmRun
    # a job pickled by 0.1 names its class hybridlib.launch.SlurmRun; it loads as the class of today
    assert pickle.loads(pickle.dumps(slurm.SlurmRun, protocol=0).replace(b"hybridlib.runs.slurm", b"hybridlib.launch")) \
        is slurm.SlurmRun


def test_training_loop_body_is_short():
    """train() reads like nanoGPT's loop: the step function is chosen before it, so the loop stays short."""
    from hybridlib.training import loop as train

    source = inspect.getsource(train.train)
    body = source[source.index("    try:\n"):source.index("    return records")]
    lines = [line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 60, len(lines)
