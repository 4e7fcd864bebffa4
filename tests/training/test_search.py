"""Hyperparameter search: real trials on the tiny model, pruning, crashes, SQLite and PostgreSQL storage."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from bertfit.cli.main import main
from bertfit.config import load_config
from bertfit.errors import BertfitError
from bertfit.training.search import load_space, run_search

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def search_flags(tiny_overrides, ag_news_csv) -> list[str]:
    return tiny_overrides + ["--data.train", str(ag_news_csv), "--data.max_train_rows", "40", "--data.max_eval_rows", "16",
                             "--train.checkpoint_every_steps", "0"]


def test_lr_grid_search_via_cli(search_flags, tmp_path, capsys):
    db = tmp_path / "runs" / "search.db"
    code = main(["search", "--space", "lr-grid", "--trials", "6", "--study-name", "grid", *search_flags])
    assert code == 0
    assert db.is_file()  # default storage: sqlite:///OUTPUT_DIR/search.db
    rows = _rows(tmp_path / "runs" / "grid" / "results.csv")
    assert len(rows) == 4  # the grid has 4 points; the grid sampler stops the study there
    assert sorted(float(r["train.lr"]) for r in rows) == [1e-5, 2e-5, 3e-5, 5e-5]
    assert {r["state"] for r in rows} == {"COMPLETE"}
    best_row = max(rows, key=lambda r: float(r["f1_macro"]))
    best = load_config(tmp_path / "runs" / "grid" / "best.yaml")
    assert best.train.lr == float(best_row["train.lr"])
    assert all(Path(r["run_dir"], "results.json").is_file() for r in rows)
    assert "best f1_macro" in capsys.readouterr().out


def test_crashing_trial_is_recorded_not_fatal(search_flags, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"model.freeze": {"choices": ["none", "7"]}}))  # 7 layers: the tiny BERT has 2
    config = load_config(None, search_flags)
    result = run_search(config, load_space(space), trials=2, study_name="crash", sampler="grid")
    rows = {r["model.freeze"]: r for r in _rows(result.table)}
    assert rows["none"]["state"] == "COMPLETE"
    assert rows["7"]["state"] == "FAIL" and "model.freeze" in rows["7"]["error"]
    assert result.best_params == {"model.freeze": "none"}


def _fake_train(curves: list[list[float]]):
    """A stand-in for train(): trial i reports curve i, so the pruning decisions are known in advance."""
    from bertfit.training.loop import LoopState
    from bertfit.training.recipe import TrainResult

    calls = []

    def fake(config, overwrite=False, on_eval=None, resume=None):
        state, curve = LoopState(), curves[len(calls)]
        calls.append(config.train.lr)
        for value in curve:
            state.step += 1
            on_eval(state, {"step": state.step, "eval/f1_macro": value})
        return TrainResult(Path(config.output_dir) / config.name, state.step, state.step, {"f1_macro": curve[-1]},
                           None, 0.0, 0.0, False)
    return fake, calls


@pytest.mark.parametrize("pruner", ["median", "asha", "none"])
def test_bad_trial_is_pruned_on_intermediate_metrics(monkeypatch, search_flags, pruner):
    import bertfit.training.recipe

    good, bad = [0.5, 0.6, 0.7, 0.8], [0.1, 0.1, 0.1, 0.1]
    fake, calls = _fake_train([good, good, good, bad])
    monkeypatch.setattr(bertfit.training.recipe, "train", fake)
    config = load_config(None, search_flags)
    result = run_search(config, load_space("lr-grid"), trials=4, study_name=pruner, pruner=pruner, seed=0)
    states = [r["state"] for r in sorted(_rows(result.table), key=lambda r: int(r["trial"]))]
    assert states[:3] == ["COMPLETE"] * 3
    assert states[3] == ("COMPLETE" if pruner == "none" else "PRUNED")
    assert sorted(calls) == [1e-5, 2e-5, 3e-5, 5e-5]  # the grid tried every learning rate once
    assert result.best_value == pytest.approx(0.8)


def test_bad_space_is_rejected_before_any_trial(search_flags, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.learning_rate": {"low": 1e-5, "high": 1e-4, "log": True}}))
    with pytest.raises(BertfitError, match="train.learning_rate: unknown field"):
        run_search(load_config(None, search_flags), load_space(space), trials=1)
    space.write_text(yaml.safe_dump({"train.lr": {"low": 1e-4, "high": 1e-5}}))
    with pytest.raises(BertfitError, match="low < high"):
        load_space(space)


def test_a_search_needs_validation_rows(search_flags):
    with pytest.raises(BertfitError, match="trials are compared on validation scores"):
        run_search(load_config(None, [*search_flags, "--data.validation_fraction", "0"]), load_space("lr-grid"), trials=1)


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server from scripts/start-postgres.sh, on a free loopback port; skipped if it cannot start."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="bertfit-pg-", dir="/tmp")  # outside pytest's private tmp: postgres must read it
    started = subprocess.run([str(ROOT / "scripts" / "start-postgres.sh"), str(port), folder],
                             capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL with scripts/start-postgres.sh: {started.stderr.strip()[-300:]}")
    yield started.stdout.strip().splitlines()[-1]
    stop = started.stderr.strip().splitlines()[-1].split("stop with: ", 1)[1]
    subprocess.run(stop.split(), capture_output=True, timeout=60)
    shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgres_study(postgres_url, search_flags, tmp_path):
    config = load_config(None, search_flags)
    space = load_space("lr-grid")
    first = run_search(config, space, trials=1, storage=postgres_url, study_name="shared", sampler="random", seed=1)
    second = run_search(config, space, trials=1, storage=postgres_url, study_name="shared", sampler="random", seed=2)
    assert first.states == {"COMPLETE": 1}
    assert second.states == {"COMPLETE": 2}  # the second worker joined the first worker's study
    assert len(_rows(second.table)) == 2
    assert second.storage.startswith("postgresql")
