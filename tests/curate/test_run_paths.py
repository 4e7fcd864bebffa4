"""A run reads its own data from any working directory: config.yaml stores local paths absolute, and the
relative paths of runs made by earlier versions are found where they can be, or named when they cannot."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from bertfit.cli.main import main
from conftest import tiny_flags, write_csv


@pytest.fixture
def run_made_in_a(tmp_path, tiny_model_dir, ag_news_rows, monkeypatch) -> Path:
    """A tiny run trained in tmp_path/a with every path on its command line relative to that folder."""
    folder = tmp_path / "a"
    folder.mkdir()
    monkeypatch.chdir(folder)
    write_csv(folder / "train.csv", ag_news_rows[:100])
    write_csv(folder / "test.csv", ag_news_rows[300:340])
    flags = [flag.replace(str(folder) + "/", "") for flag in tiny_flags(tiny_model_dir, folder)]
    assert main(["train", *flags, "--data.train", "train.csv", "--data.test", "test.csv", "--name", "news", "--quiet"]) == 0
    return folder / "runs" / "news"


def evaluate(run: Path) -> int:
    return main(["evaluate", str(run), "--no-calibrate", "--no-baselines", "--no-figures"])


def make_relative(run: Path, **paths: str) -> None:
    """config.yaml as a run made before paths were stored absolute has it."""
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["data"].update(paths)
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_a_run_evaluates_its_own_test_split_from_another_folder(run_made_in_a, tmp_path, monkeypatch, capsys):
    saved = yaml.safe_load((run_made_in_a / "config.yaml").read_text())
    assert saved["data"]["train"] == str(tmp_path / "a" / "train.csv")
    assert saved["data"]["test"] == str(tmp_path / "a" / "test.csv")
    assert saved["output_dir"] == "runs"  # where runs go is a setting, not data: kept as written
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert evaluate(run_made_in_a) == 0, capsys.readouterr().err
    assert "test.csv, split test, 40 rows" in capsys.readouterr().out


def test_relative_paths_of_earlier_runs_are_found_or_named(run_made_in_a, tmp_path, monkeypatch, capsys, caplog):
    make_relative(run_made_in_a, train="train.csv", test="test.csv")
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    # the run still sits at output_dir/name of the folder it was made in: its paths are read from there
    assert evaluate(run_made_in_a) == 0, capsys.readouterr().err
    # a copy elsewhere finds a file in the run folder itself
    copy = tmp_path / "shelf" / "copy"
    shutil.copytree(run_made_in_a, copy)
    shutil.copy(tmp_path / "a" / "test.csv", copy / "test.csv")
    assert evaluate(copy) == 0, capsys.readouterr().err
    # ... and where it is found nowhere, the warning and the error name the field
    (copy / "test.csv").unlink()
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="bertfit.data.paths"):
        assert evaluate(copy) == 2
    assert "data.test: file test.csv not found" in capsys.readouterr().err
    assert any("data.test: test.csv in" in r.message and "earlier version" in r.message for r in caplog.records)


def test_presets_registry_and_hub_names_stay_names(tmp_path, monkeypatch):
    from bertfit.config import load_config
    from bertfit.data.paths import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ag_news").mkdir()  # a folder that shares a preset's name does not turn the preset into a path
    (tmp_path / "embedded").mkdir()
    (tmp_path / "auto").mkdir()
    (tmp_path / "model").mkdir()
    write_csv(tmp_path / "test.csv", [("a text", "x")])
    config = absolute_paths(load_config(None, ["--data.train", "ag_news", "--data.validation", "someone/news",
                                               "--data.test", "test.csv", "--model.init_from", "model"]))
    assert (config.data.train, config.data.validation, config.model.name) == ("ag_news", "someone/news", "auto")
    assert absolute_paths(load_config(None, ["--model.name", "embedded"])).model.name == "embedded"
    assert config.data.test == str(tmp_path / "test.csv") and config.model.init_from == str(tmp_path / "model")
