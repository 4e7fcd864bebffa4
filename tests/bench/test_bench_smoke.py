"""bench/ is part of the product: every benchmark imports without doing work, answers --help, and names only bertfit
functions that exist, so an API change that breaks a benchmark fails here rather than at its next full run."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = sorted(path for path in BENCH.glob("*.py"))


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_help_answers_at_once_from_the_repository_root(script):
    done = subprocess.run([sys.executable, str(script.relative_to(ROOT)), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and script.name in done.stdout.splitlines()[0]


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_importing_a_benchmark_runs_nothing_and_leaves_sys_path_alone(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    before = list(sys.path)
    module = importlib.import_module(script.stem)
    assert sys.path == before
    assert callable(module.main) and module.__doc__, f"{script.name}: needs a docstring and a main()"


def _bertfit_imports(script: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from bertfit... import name` in the script, at the top or inside a function."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bertfit"
            for alias in node.names]


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_every_bertfit_name_a_benchmark_imports_exists(script):
    missing = []
    for module_name, name in _bertfit_imports(script):
        module = importlib.import_module(module_name)
        if not hasattr(module, name):
            try:  # a submodule imported by name: from bertfit.training import contrastive
                importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError:
                missing.append(f"from {module_name} import {name}")
    assert not missing, f"{script.name} imports names bertfit no longer has: {missing}"


def test_the_quick_benchmark_runs_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path):
    """`make bench`'s step timing, on the tiny model: it drives bertfit's tokenizer, groups and pair loss for real, so a
    changed signature there fails here."""
    out = tmp_path / "contrastive_step.json"
    done = subprocess.run([sys.executable, "bench/contrastive_step.py", "--model", str(tiny_model_dir), "--steps", "2",
                           "--warmup", "1", "--threads", "1", "--variants", "all", "words", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [run["variant"] for run in result["runs"]] == ["all", "words"] and result["command"].startswith("python bench/")
    everything, tuned = (run["trained_parameters"] for run in result["runs"])
    assert 0 < tuned < everything and all(run["step_ms"] > 0 for run in result["runs"])


def test_the_catalogue_lists_every_benchmark_with_its_purpose():
    done = subprocess.run([sys.executable, "bench/common.py"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("python bench/")}
    assert listed == {f"bench/{path.name}" for path in SCRIPTS if path.name != "common.py"}
    assert all(len(line.split(maxsplit=2)) == 3 for line in done.stdout.splitlines() if line.startswith("python"))


def test_infrastructure_scripts_live_in_scripts_not_bench():
    """bench/ holds measurements; the GPU bundle and check, and the commit comparison, are tools."""
    for name in ("gpu_bundle.py", "gpu_check.sh", "gpu_check_report.py", "compare_commits.py"):
        assert (ROOT / "scripts" / name).is_file() and not (BENCH / name).exists()
