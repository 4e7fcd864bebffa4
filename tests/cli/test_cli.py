"""The real CLI: end to end on the embedded MiniLM, and every kind of bad input answered with exit 2."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bertfit.cli.main import main


def _bertfit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertfit", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.e2e
def test_train_predict_evaluate_on_the_embedded_model(tmp_path, ag_news_csv, capsys):
    test_csv = ag_news_csv.parent / "test.csv"
    code = main(["train", "--name", "e2e", "--output_dir", str(tmp_path / "runs"), "--cache_dir", str(tmp_path / "cache"),
                 "--data.train", str(ag_news_csv), "--data.test", str(test_csv), "--model.max_length", "64",
                 "--train.method", "standard",
                 "--train.epochs", "1", "--train.batch_size", "16", "--train.lr", "1e-4", "--train.progress", "false"])
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = tmp_path / "runs" / "e2e"
    results = json.loads((run_dir / "results.json").read_text())
    assert f"test: accuracy {results['test']['accuracy']:.4f}" in out
    assert results["test"]["accuracy"] > 0.5  # 4 balanced classes: chance is 0.25
    assert json.loads((run_dir / "model" / "config.json").read_text())["id2label"] == {
        "0": "Business", "1": "Sci/Tech", "2": "Sports", "3": "World"}
    assert (run_dir / "tensorboard").is_dir() and list((run_dir / "tensorboard").iterdir())
    assert {"config.yaml", "labels.json", "env.json", "metrics.jsonl", "model"} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "checkpoint").exists()  # a finished run drops its checkpoint (train.keep_checkpoint)

    assert main(["predict", str(run_dir), "Shares of Apple rose after strong quarterly earnings"]) == 0
    label, confidence = capsys.readouterr().out.split("\t")[:2]
    assert label in ("Business", "Sci/Tech", "Sports", "World") and 0.25 < float(confidence) <= 1

    out_csv = tmp_path / "preds.csv"
    assert main(["predict", str(run_dir), "--file", str(test_csv), "--out", str(out_csv)]) == 0
    with open(out_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 100 and set(rows[0]) == {"row", "text", "label", "confidence", "prob_Business", "prob_Sci/Tech",
                                                  "prob_Sports", "prob_World"}
    with open(test_csv, newline="") as file:
        truth = [row["label"] for row in csv.DictReader(file)]
    accuracy = sum(row["label"] == true for row, true in zip(rows, truth)) / len(rows)
    stack = results["stack"] if results["stack"] and results["stack"]["built"] else None  # train.stack auto
    assert accuracy == pytest.approx(stack["test"]["stack"]["accuracy"] if stack else results["test"]["accuracy"])

    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    evaluation = json.loads((run_dir / "eval" / "test.json").read_text())
    assert evaluation["accuracy"] == pytest.approx(results["test"]["accuracy"])


def test_env_says_when_no_gpu(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "precision" in out
    import torch
    if not torch.cuda.is_available():
        assert "no GPU" in out and "fp32" in out


@pytest.mark.parametrize("args, message", [
    (["train", "--data.train", "missing.csv"], "data.train: file missing.csv not found"),
    (["train", "--train.lrr", "1", "--model.pooling", "max"], "train.lrr: unknown field (did you mean train.lr?)"),
    (["train", "--data.train", "bad.csv"], "bad.csv line 3: byte 0xff is not valid UTF-8"),
    (["train", "--data.train", "one_class.csv"], "every training row has label 'a'"),
    (["predict", "no_such_run", "hello"], "no trained model found"),
    (["train", "--config", "nope.yaml"], "config file nope.yaml not found"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, args, message):
    (tmp_path / "bad.csv").write_bytes(b"text,label\nfine,a\n\xff\xfe,b\n")
    (tmp_path / "one_class.csv").write_text("text,label\nx,a\ny,a\n")
    result = _bertfit(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_existing_run_is_refused_before_any_work(tmp_path):
    run_dir = tmp_path / "runs" / "taken"
    run_dir.mkdir(parents=True)
    (run_dir / "keep.txt").write_text("precious")
    result = _bertfit("train", "--name", "taken", "--data.train", "missing.csv", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (run_dir / "keep.txt").read_text() == "precious"


def test_api_errors_are_shown_as_the_commands_flags(tmp_path, capsys):
    """The API names its parameters (max_batch, max_rows); the CLI prints the flags a user typed."""
    from bertfit.cli.main import _parser, as_flags

    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "--max-batch: must be > 0" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--onnx", "--max-rows", "0"]) == 2
    assert "--max-rows: must be >= 1" in capsys.readouterr().err
    _, commands = _parser()
    # Plain words stay words: only a name that opens a clause, or has an underscore, is a parameter.
    assert as_flags("threads: must be >= 1; the device is busy", commands.choices["serve"]) == \
        "--threads: must be >= 1; the device is busy"


def test_a_run_without_validation_rows_says_what_it_kept(tmp_path, capsys):
    from bertfit.cli.training import _print_result
    from bertfit.training.recipe import TrainResult

    assert _print_result(TrainResult(tmp_path, 160, 160, {}, None, 12.0, 40.0, False)) == 0
    out = capsys.readouterr().out
    assert "no validation rows held out: the last weights (step 160) are kept; score them with: bertfit evaluate" in out
    assert "best validation" not in out
    last = TrainResult(tmp_path, 160, 160, {"accuracy": 0.5}, None, 12.0, 40.0, False, kept="last")
    assert _print_result(last) == 0
    assert "validation of the last weights (step 160, train.keep last): accuracy 0.5000" in capsys.readouterr().out
    assert _print_result(TrainResult(tmp_path, 160, 80, {"accuracy": 0.5}, None, 12.0, 40.0, False)) == 0
    assert "best validation (step 80): accuracy 0.5000" in capsys.readouterr().out
