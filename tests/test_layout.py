"""The house: floors that do not cross, no import circles, small rooms, typed configs.

    flows/     may import tasks/ and training/        (spec -> typed config -> one call -> report)
    tasks/     the data floor: imports nothing from training/ or flows/
    training/  a library: imports nothing from tasks/ or flows/

Every import counts, also the ones inside functions, because a lazy import is still a door.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "training")
FORBIDDEN = {"tasks": {"training", "flows"}, "training": {"tasks", "flows"}}
# names a config travels under in training/: none of them may be read by string key
CONFIG_NAMES = {"cfg", "config", "conf", "spec", "suite", "src", "tr", "train", "mcfg", "meta", "scaling", "stage", "settings", "run"}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            if "sitecustom" in f.parts:
                continue
            name = ".".join(f.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a `from a import b` of a module b counts as a.b)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = name.split(".")
                base = ".".join(parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {t for t in imports_of(name, path, set(mods)) if t in mods and t != name} for name, path in mods.items()}


def test_floors_do_not_cross():
    crossings = [f"{m} imports {t}" for m, targets in graph().items() for t in targets
                 if t.split(".")[0] in FORBIDDEN.get(m.split(".")[0], set())]
    assert not crossings, "\n".join(crossings)


def test_no_import_circles():
    g = graph()
    # a package's __init__ importing its own modules is not a circle of rooms; everything else is
    edges = {m: {t for t in ts if not (m in PACKAGES or t.startswith(m + "."))} for m, ts in g.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_walk_finds_crossings_and_circles(tmp_path, monkeypatch):
    """The checks above can fail: a planted crossing and a planted circle are found."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "training" / "a.py").write_text("def f():\n    from tasks.b import x\n")
    (tmp_path / "tasks" / "b.py").write_text("from tasks import c\n")
    (tmp_path / "tasks" / "c.py").write_text("import tasks.b\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError, match="training.a imports tasks.b"):
        test_floors_do_not_cross()
    with pytest.raises(AssertionError, match="tasks.b -> tasks.c -> tasks.b"):
        test_no_import_circles()


def test_tasks_root_holds_few_modules():
    root = sorted(p.name for p in (REPO / "tasks").glob("*.py"))
    assert len(root) <= 8, root


def _string_key_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in CONFIG_NAMES \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            found.append(f"{path.name}:{node.lineno} {node.value.id}[{node.slice.value!r}]")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in CONFIG_NAMES \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append(f"{path.name}:{node.lineno} {node.func.value.id}.get({node.args[0].value!r})")
    return found


def test_training_reads_no_config_by_string_key(tmp_path):
    found = [r for f in sorted((REPO / "training").rglob("*.py")) for r in _string_key_reads(f)]
    assert not found, "\n".join(found)
    planted = tmp_path / "x.py"
    planted.write_text("def f(cfg, config):\n    return cfg['lr'], config.get('steps')\n")
    assert len(_string_key_reads(planted)) == 2  # the check can fail


def test_the_trainer_takes_one_typed_config():
    import inspect
    import typing

    from training import train_loop
    from training.config import TrainConfig

    for fn in (train_loop.train_loop_per_worker, train_loop.run_training, train_loop.fit):
        assert typing.get_type_hints(fn)["cfg"] is TrainConfig, fn.__name__
        assert next(iter(inspect.signature(fn).parameters)) == "cfg"
    assert TrainConfig.__dataclass_params__.frozen


def test_a_build_without_the_sample_world_never_imports_it(tmp_path):
    """A spec that names no world: its build (here through the validation a build starts with,
    and its stages up to balancing on local inputs) leaves tasks.world unimported."""
    import subprocess
    import sys

    code = f"""
import sys, json
from tasks.context import make_context
from tasks.specs import BuildSpec, load_spec
from tasks import stages
spec = load_spec({{"kind": "build-wit", "name": "t", "output_dir": {str(tmp_path / 'out')!r},
                  "vocabulary": {{"wordnet": {{"enabled": False}}, "wikipedia": {{"min_unigram_count": 1, "min_bigram_count": 1}}}},
                  "crawl": {{"tables": [{{"path": {str(tmp_path / 't.jsonl')!r}}}], "languages": ["any"]}}}}, BuildSpec)
ctx = make_context(spec, log=lambda *_: None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("tasks."))))
"""
    (tmp_path / "t.jsonl").write_text('{"url": "http://example.com/a.jpg", "caption": "a red flag"}\n')
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = r.stdout.strip().splitlines()[-1]
    assert "tasks.world" not in loaded and "tasks.context" in loaded


def test_every_project_name_the_benchmarks_import_exists():
    """bench/ scripts import the project inside functions; a refactor that moves a module must not
    leave a benchmark that fails only when someone runs it."""
    import importlib
    import importlib.util

    missing = []
    for f in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                mod = importlib.import_module(node.module)
                missing += [f"{f.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(mod, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
            elif isinstance(node, ast.Import):
                missing += [f"{f.name}: {a.name}" for a in node.names
                            if a.name.split(".")[0] in PACKAGES and importlib.util.find_spec(a.name) is None]
    assert not missing, "\n".join(missing)
