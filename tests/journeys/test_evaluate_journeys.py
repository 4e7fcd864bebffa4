"""Evaluation as a user walks it, on data whose columns are not `text` and `label`: AG News as
`headline,body,topic` with label names. Train, evaluate the run, evaluate another file, evaluate the ag_news preset
(whose labels are numbers standing for its own names), report each; a multi-label run the same way. Every command a
step prints, and every command the model card prints, is run as printed, in the folder the user is in."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertfit.cli.main import main
from bertfit.config import DataConfig
from bertfit.data.presets import PRESETS
from bertfit.data.read import read_split
from bertfit.infer.predictor import Predictor
from conftest import headline_rows, read_csv, tiny_flags, write_csv

HEADER = ("headline", "body", "topic")
COLUMNS = ["--data.text_columns", "[headline, body]", "--data.label_column", "topic"]


def printed_commands(out: str) -> list[list[str]]:
    """The command lines a step printed for the user to run next (lines that start with `bertfit `)."""
    return [shlex.split(line) for line in out.splitlines() if line.strip().startswith("bertfit ")]


def run_printed(command: list[str], capsys) -> str:
    """Run a printed command through the CLI entry point; its output, after asserting it succeeded."""
    assert command[0] == "bertfit"
    code = main(command[1:])
    captured = capsys.readouterr()
    assert code == 0, f"{shlex.join(command)} failed:\n{captured.err}"
    return captured.out


def written(out: str) -> tuple[Path, list[str]]:
    """The folder and the files the `written:` line names."""
    folder, files = re.search(r"^written: (\S+)/ \(([^)]*)\)", out, re.M).groups()
    return Path(folder), files.split(", ")


def train_in(folder: Path, model_dir: Path, name: str, *flags: str) -> Path:
    """A tiny run trained from `folder` (the user's, runs/ relative to it) on its train.csv and test.csv."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        short = [flag.replace(str(folder) + "/", "") for flag in tiny_flags(model_dir, folder)]
        assert main(["train", *short, "--data.train", "train.csv", "--data.test", "test.csv", *COLUMNS,
                     "--name", name, "--quiet", *flags]) == 0
    return Path("runs") / name


@pytest.fixture(scope="module")
def news(tmp_path_factory, tiny_model_dir) -> Path:
    """The user's folder: train.csv (300 rows: 30 held out for validation), test.csv and other.csv, and runs/news."""
    folder = tmp_path_factory.mktemp("user")
    write_csv(folder / "train.csv", headline_rows(1000, 1300), HEADER)
    write_csv(folder / "test.csv", headline_rows(1300, 1400), HEADER)
    write_csv(folder / "other.csv", headline_rows(1400, 1480), HEADER)
    train_in(folder, tiny_model_dir, "news")
    return folder


def test_evaluating_other_data_and_a_preset_keeps_the_runs_own_results(news, monkeypatch, capsys):
    monkeypatch.chdir(news)
    run = Path("runs/news")
    out = run_printed(["bertfit", "evaluate", str(run), "--no-baselines"], capsys)
    folder, files = written(out)
    assert folder == run / "eval" / "test" and all((folder / name).is_file() for name in files)
    assert {"metrics.json", "errors.csv", "confusion.png", "reliability.png"} <= set(files)
    # ~30 validation rows are too few for a temperature: none fitted, the model is left as it was, and it says so
    held_out = json.loads((run / "results.json").read_text())["rows"]["validation"]
    assert held_out < 100
    assert f"temperature 1.000 kept, none fitted: {held_out} validation rows are too few to fit a temperature on " \
           "(at least 100)" in out
    assert json.loads((run / "model" / "bertfit.json").read_text())["temperature"] == 1.0
    own = {name: (run / "eval" / name).read_bytes() for name in ("test.json", "test/metrics.json", "test/errors.csv")}
    [report] = printed_commands(out)
    assert report == ["bertfit", "report", str(run)]
    assert "(eval/test)" in run_printed(report + ["--explain-errors", "0"], capsys)

    out = run_printed(["bertfit", "evaluate", str(run), "--data", "other.csv", "--no-baselines", "--calibrate"], capsys)
    folder, files = written(out)
    assert folder == run / "eval" / "other" and all((folder / name).is_file() for name in files)
    assert json.loads((run / "eval" / "other.json").read_text())["rows"] == 80
    assert f"none fitted: {held_out} validation rows" in out  # asked for, still refused below the minimum
    [report] = printed_commands(out)
    assert report == ["bertfit", "report", str(run), "--data", "other"]
    out = run_printed(report + ["--explain-errors", "0"], capsys)
    assert f"report: {run / 'report-other.html'} (eval/other)" in out and "(eval/test)" in out  # the card: own test
    assert "other.csv, split test, 80 rows" in (run / "report-other.html").read_text()

    out = run_printed(["bertfit", "evaluate", str(run), "--data", "ag_news", "--max-rows", "100", "--no-baselines"],
                      capsys)
    folder, _ = written(out)
    assert folder == run / "eval" / "ag_news-test"
    assert "none fitted: other data" in out
    preset = read_split("ag_news", "test", DataConfig(train="ag_news"))
    truth = [PRESETS["ag_news"].label_names[label] for label in preset.raw_labels[:100]]
    predicted = [p.label for p in Predictor(run, device="cpu").predict(preset.texts[:100])]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(np.mean([a == b for a, b in zip(truth, predicted)]))
    assert {name: scores["support"] for name, scores in metrics["per_class"].items()} == \
        {name: truth.count(name) for name in metrics["per_class"]}
    errors = read_csv(folder / "errors.csv")
    assert errors and all(e["true"] == truth[int(e["row"]) - 1] != e["predicted"] for e in errors)
    assert {name: (run / "eval" / name).read_bytes() for name in own} == own  # the run's own results, untouched
    [report] = printed_commands(out)
    assert report == ["bertfit", "report", str(run), "--data", "ag_news-test"]
    run_printed(report + ["--explain-errors", "0"], capsys)
    assert "ag_news" in (run / "report-ag_news-test.html").read_text()
    shutil.copytree(run, "runs/news-copy")  # compare finds each run's evaluation of the same other data
    run_printed(["bertfit", "compare", str(run), "runs/news-copy", "--data", "other.csv", "--out", "compare.html"], capsys)
    assert Path("compare.html").read_text().count("other.csv, split test, 80 rows") == 2


def test_data_in_other_columns_is_evaluated_with_data_field_flags(news, monkeypatch, capsys):
    """A file whose columns differ from the run's: data fields after RUN say how to read it."""
    monkeypatch.chdir(news)
    rows = headline_rows(1400, 1480)
    write_csv(news / "renamed.csv", [(f"{title} {body}", topic) for title, body, topic in rows], ("story", "section"))
    assert main(["evaluate", "runs/news", "--data", "renamed.csv", "--no-baselines", "--no-figures"]) == 2
    assert "column 'headline' not found" in capsys.readouterr().err
    assert main(["evaluate", "runs/news", "--data", "renamed.csv", "--data.text_columns", "story",
                 "--data.label_column", "section", "--no-baselines", "--no-figures"]) == 0
    folder, _ = written(capsys.readouterr().out)
    renamed = json.loads((folder / "metrics.json").read_text())
    other = Predictor("runs/news").predict([f"{title} {body}" for title, body, _ in rows])
    expected = np.mean([p.label == topic for p, (_, _, topic) in zip(other, rows)])
    assert renamed["rows"] == 80 and renamed["accuracy"] == pytest.approx(expected)
    assert main(["evaluate", "runs/news", "--data", "renamed.csv", "--train.lr", "1"]) == 2
    assert "evaluate takes data fields after RUN" in capsys.readouterr().err


def test_a_label_the_run_does_not_know_is_one_clear_error(news, monkeypatch, capsys):
    monkeypatch.chdir(news)
    write_csv(news / "weather.csv", [("Rain", "Rain all week", "Weather"), *headline_rows(1500, 1503)], HEADER)
    assert main(["evaluate", "runs/news", "--data", "weather.csv", "--no-baselines", "--no-figures"]) == 2
    error = capsys.readouterr().err
    assert "weather.csv row 1: label 'Weather' is not in the label set (Business, Sci/Tech, Sports, World)" in error
    assert not (news / "runs" / "news" / "eval" / "weather").exists()


def test_stack_refuses_a_weight_chosen_on_too_few_validation_rows(news, monkeypatch, capsys):
    monkeypatch.chdir(news)
    held_out = json.loads((news / "runs" / "news" / "results.json").read_text())["rows"]["validation"]
    assert main(["stack", "runs/news", "--device", "cpu"]) == 2
    assert f"{held_out} validation rows are too few to choose a stack's weight on (at least 100" in capsys.readouterr().err
    assert "stack" not in json.loads((news / "runs" / "news" / "model" / "bertfit.json").read_text())


def test_the_model_cards_commands_run_as_printed(news, monkeypatch, capsys):
    monkeypatch.chdir(news)
    run_printed(["bertfit", "evaluate", "runs/news", "--no-baselines", "--no-figures"], capsys)
    run_printed(["bertfit", "report", "runs/news", "--explain-errors", "0"], capsys)
    card = (news / "runs" / "news" / "model" / "README.md").read_text()
    commands = [shlex.split(command) for command in re.findall(r"`(bertfit [^`]+)`", card)]
    assert ["bertfit", "predict", "runs/news", "your text"] in commands
    assert ["bertfit", "export", "runs/news", "--target", "auto"] in commands
    for command in commands:
        out = run_printed(command, capsys)
        if command[1] == "export":  # the card's way to a faster model, where it states the PyTorch speed
            assert "predict and serve use on a CPU:" in out
        else:
            assert out.split("\t")[0] in PRESETS["ag_news"].label_names
    python = re.findall(r"`(Predictor\([^`]+\))`", card) + [card.split("```python\n")[1].split("```")[0]]
    namespace: dict = {"Predictor": Predictor}
    exec(python[0].replace("[...]", '["your text"]'), namespace)  # noqa: S102 (the card's own line)
    exec(python[1], namespace)  # noqa: S102 (the card's own transformers lines)
    assert namespace["classifier"]("your text", top_k=None)[0]["label"] in PRESETS["ag_news"].label_names


def test_a_multi_label_run_is_evaluated_and_reported(tmp_path, tiny_model_dir, monkeypatch, capsys):
    rows = headline_rows(2000, 2240)
    median = np.median([len(body) for _, body, _ in rows])
    tagged = [(title, body, topic + ("|long" if len(body) > median else "")) for title, body, topic in rows]
    write_csv(tmp_path / "train.csv", tagged[:180], HEADER)
    write_csv(tmp_path / "test.csv", tagged[180:], HEADER)
    run = train_in(tmp_path, tiny_model_dir, "tags", "--data.multi_label", "true", "--train.metric", "f1_micro",
                   "--train.epochs", "2")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    out = run_printed(["bertfit", "evaluate", str(run)], capsys)
    folder, files = written(out)
    assert files == ["metrics.json", "errors.csv", "per_label.png", "curves.png"]
    assert all((folder / name).is_file() for name in files)
    metrics = json.loads((folder / "metrics.json").read_text())
    meta = json.loads((tmp_path / run / "model" / "bertfit.json").read_text())
    assert metrics["thresholds"] == meta["thresholds"] and set(metrics["per_label"]) == set(meta["labels"])
    texts = [f"{title} {body}" for title, body, _ in tagged[180:]]
    truth = [set(topics.split("|")) for _, _, topics in tagged[180:]]
    predicted = [set(p.labels) for p in Predictor(run, device="cpu").predict(texts)]
    for name, scores in metrics["per_label"].items():
        hits = sum(name in t and name in p for t, p in zip(truth, predicted))
        assert (scores["true_positives"], scores["support"]) == (hits, sum(name in t for t in truth))
        said = sum(name in p for p in predicted)
        assert scores["precision"] == pytest.approx(hits / said if said else 0.0)
    assert metrics["accuracy"] == pytest.approx(np.mean([t == p for t, p in zip(truth, predicted)]))
    errors = read_csv(folder / "errors.csv")
    assert len(errors) == metrics["wrong_sets"] == sum(t != p for t, p in zip(truth, predicted))
    for error in errors:
        row = int(error["row"]) - 1
        assert (set(error["true"].split("|")), set(filter(None, error["predicted"].split("|")))) == (truth[row], predicted[row])
    [report] = printed_commands(out)
    out = run_printed(report, capsys)
    page = (tmp_path / run / "report.html").read_text()
    assert "Per label" in page and "Wrong label sets" in page and page.count("data:image/png;base64,") == 2
    card = (tmp_path / run / "model" / "README.md").read_text()
    assert "| label | threshold | precision | recall | F1 | support |" in card and "| long |" in card
    assert "f1_micro" in card and "Temperature" not in card
