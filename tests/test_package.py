"""bertfit as a package: the wheel `python -m build` makes installs in a clean virtual environment and trains and
predicts there, away from this checkout; and each extra's features import with only that extra installed."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import tiny_flags, write_csv
from package_env import declared, dependency_folder

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "bertfit"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the project's files (the build writes next to its sources)."""
    pytest.importorskip("build")
    copy = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(copy)],
                   check=True, capture_output=True)
    return next(out.glob("bertfit-*.whl"))


def test_the_wheel_holds_every_package_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"bertfit/{path.relative_to(SOURCE).as_posix()}" for path in SOURCE.rglob("*")
                if path.is_file() and path.suffix in (".py", ".html") and "__pycache__" not in path.parts}
    assert expected - names == set()
    assert {"bertfit/deploy/page.html", "bertfit/modeling_bertfit.py"} <= names


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    """A new virtual environment with `pip install bertfit-*.whl`. Its dependencies come from this environment's
    site-packages through a .pth file (offline, and no multi-GB torch download), bertfit itself only from the wheel."""
    home = tmp_path_factory.mktemp("clean")
    venv.EnvBuilder(with_pip=False).create(home / "venv")  # pip and setuptools come with the dependencies
    python = home / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    use_extras(home, tuple(declared()[1]), site)  # everything but bertfit's own editable install
    (home / "site").write_text(str(site))
    (home / "work").mkdir()
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-index", str(wheel)], capture_output=True,
                               text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return home


def use_extras(home: Path, extras: tuple[str, ...], site: Path | None = None) -> None:
    """Point the clean environment at this one's packages for the core dependencies and `extras` only."""
    site = site or Path((home / "site").read_text())
    folder = dependency_folder(home / ("deps-" + "-".join(extras or ("core",))), extras)
    (site / "dependencies.pth").write_text(f"{folder}\n")


def run_in(home: Path, *args: str, expect: int = 0) -> str:
    """A command of the clean environment, run in its work folder; its output (stdout, then stderr)."""
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(home / "venv" / "bin" / args[0]), *args[1:]], cwd=home / "work", env=env,
                          capture_output=True, text=True)
    assert done.returncode == expect, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_installed_wheel_trains_and_predicts_away_from_the_checkout(clean_venv, tiny_model_dir, ag_news_rows):
    work = clean_venv / "work"
    write_csv(work / "train.csv", [(text, label) for text, label in ag_news_rows[:120]], header=("body", "topic"))

    def run(*args: str) -> str:
        return run_in(clean_venv, *args)

    where = run("python", "-c", "import bertfit, importlib.resources as r; print(bertfit.__file__); "
                                "print((r.files('bertfit.deploy') / 'page.html').read_text()[:15])")
    assert str(clean_venv / "venv") in where.splitlines()[0] and "<!doctype html" in where.lower()
    run("bertfit", "train", *tiny_flags(tiny_model_dir, work), "--name", "wheel", "--data.train", "train.csv",
        "--data.text_columns", "body", "--data.label_column", "topic", "--train.onnx_copy", "true")
    printed = run("bertfit", "predict", str(work / "runs" / "wheel"), "Stocks rallied on Friday")
    assert printed.split("\t")[0] in {label for _, label in ag_news_rows[:120]}


def test_core_alone_trains_and_predicts_and_each_extra_adds_its_commands(clean_venv, tiny_model_dir, ag_news_rows):
    """`pip install bertfit` with no extra trains and predicts; a command that needs an extra names it; with that
    extra alone (the others absent) the command runs."""
    write_csv(clean_venv / "work" / "core.csv", ag_news_rows[:150], header=("body", "topic"))
    write_csv(clean_venv / "work" / "core-test.csv", ag_news_rows[150:200], header=("body", "topic"))
    use_extras(clean_venv, ())
    trained = run_in(clean_venv, "bertfit", "train", *tiny_flags(tiny_model_dir, clean_venv / "work"), "--name", "core",
                     "--data.train", "core.csv", "--data.test", "core-test.csv", "--data.text_columns", "body",
                     "--data.label_column", "topic", "--train.onnx_copy", "true")
    assert "no ONNX copy (onnxruntime is not installed)" in trained
    run = str(clean_venv / "work" / "runs" / "core")
    assert run_in(clean_venv, "bertfit", "predict", run, "Stocks rallied").split("\t")[0] in dict(ag_news_rows).values()
    for command, extra in ((["evaluate", run], "eval"), (["export", run, "--onnx"], "serve"),
                           (["audit", run], "curate"), (["serve", run], "serve")):
        refused = run_in(clean_venv, "bertfit", *command, expect=2)
        assert f"bertfit[{extra}]" in refused and "Traceback" not in refused, refused
    assert not (clean_venv / "work" / "runs" / "core" / "eval").exists(), "refused before any work"
    use_extras(clean_venv, ("eval",))
    assert "accuracy" in run_in(clean_venv, "bertfit", "evaluate", run)
    use_extras(clean_venv, ("serve",))
    assert "predict and serve use on a CPU: onnx-" in run_in(clean_venv, "bertfit", "export", run, "--onnx",
                                                              "--max-rows", "40")


@pytest.mark.parametrize("extra, modules", [
    ("hub", "bertfit.data.hub_presets datasets"),
    ("scale", "bertfit.training.search optuna peft accelerate"),
    ("track", "bertfit.training.trackers mlflow wandb"),
    ("curate", "bertfit.curate.audit cleanlab sklearn"),
    ("openvino", "bertfit.deploy.variants openvino"),
    ("ct2", "bertfit.deploy.variants ctranslate2"),
])
def test_each_extra_imports_alone(clean_venv, extra, modules):
    if any(importlib.util.find_spec(name) is None for name in modules.split()[1:]):
        pytest.skip(f"the {extra} extra is not installed here")
    use_extras(clean_venv, (extra,))
    run_in(clean_venv, "python", "-c", "; ".join(f"import {name}" for name in modules.split()))
