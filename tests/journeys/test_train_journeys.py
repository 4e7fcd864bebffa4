"""Training as a user walks it from the command line, on columns that are not `text` and `label`: every next step
the command prints (resume an interrupted run, score a run that held nothing out, start a planned run) runs as
printed."""

from __future__ import annotations

import shlex

from bertfit.cli.main import main
from conftest import tiny_flags, write_csv
from interrupts import stop_at

COLUMNS = ["--data.text_columns", "[headline, body]", "--data.label_column", "topic"]


def _files(folder, rows):
    write_csv(folder / "train.csv", [(text[:60], text[60:] or ".", label) for text, label in rows[:200]],
              ("headline", "body", "topic"))
    write_csv(folder / "test.csv", [(text[:60], text[60:] or ".", label) for text, label in rows[200:260]],
              ("headline", "body", "topic"))


def _printed(out: str, after: str) -> list[str]:
    line = next(line for line in out.splitlines() if after in line)
    return shlex.split(line.split(after, 1)[1])


def test_an_interrupted_run_resumes_with_the_command_it_prints(tiny_model_dir, ag_news_rows, tmp_path, monkeypatch, capsys):
    _files(tmp_path, ag_news_rows)
    flags = tiny_flags(tiny_model_dir, tmp_path) + COLUMNS + ["--data.train", str(tmp_path / "train.csv"),
                                                              "--name", "stopped", "--train.epochs", "2"]
    with monkeypatch.context() as patch:
        stop_at(patch, 5)
        assert main(["train", *flags]) == 130
    command = _printed(capsys.readouterr().out, "resume with: ")
    assert command[:3] == ["bertfit", "train", "--resume"]
    assert main(command[1:]) == 0
    assert "run: " in capsys.readouterr().out


def test_a_run_that_held_nothing_out_is_scored_with_the_command_it_prints(tiny_model_dir, ag_news_rows, tmp_path, capsys):
    _files(tmp_path, ag_news_rows)
    flags = tiny_flags(tiny_model_dir, tmp_path) + COLUMNS + ["--data.train", str(tmp_path / "train.csv"),
                                                              "--name", "all-rows", "--data.validation_fraction", "0"]
    assert main(["train", *flags]) == 0
    command = _printed(capsys.readouterr().out, "score them with: ")
    command = [str(tmp_path / "test.csv") if part == "TEST_FILE" else part for part in command]
    assert main([*command[1:], "--no-baselines", "--no-figures"]) == 0
    assert "accuracy" in capsys.readouterr().out
