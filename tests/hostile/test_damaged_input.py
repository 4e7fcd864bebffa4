# ruff: noqa: F811  (pytest fixtures imported from hostile_support are redefined as test arguments)
"""Damaged or odd files end in one line naming the file and what to do, never a traceback or a silent guess."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from hostile_support import run_copy, tiny_run  # noqa: F401  (fixtures)

from bertfit.cli.main import main
from bertfit.config import DataConfig, load_config
from bertfit.data import read
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError
from conftest import write_csv

ROWS = [("stocks rally", "business"), ("team wins cup", "sports"), ("new chip", "tech"), ("fed rates", "business"),
        ("late goal", "sports"), ("phone launch", "tech")]


def _data(tmp_path, train_rows, test_rows=None, header=("text", "label")) -> DataConfig:
    overrides = ["--data.train", str(write_csv(tmp_path / "train.csv", train_rows, header))]
    if test_rows is not None:
        overrides += ["--data.test", str(write_csv(tmp_path / "test.csv", test_rows, header))]
    return load_config(None, overrides).data


def test_a_csv_field_over_128_kib_is_read(tmp_path):
    long_text = "word " * 60_000  # 300 KB: over csv's default field limit
    data = load_dataset(_data(tmp_path, ROWS + [(long_text, "tech")]), seed=0)
    assert max(len(t) for split in data.splits.values() for t in split.texts) > 128 * 1024


def test_a_field_past_the_cap_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "MAX_FIELD_BYTES", 1000)
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"an open quote never closed,' + "x" * 2000 + "\n", encoding="utf-8")
    with pytest.raises(BertfitError, match=r"train.csv line \d+: unreadable CSV .*check its quoting"):
        read.read_file(path, DataConfig())


def test_duplicate_header_columns_are_refused(tmp_path):
    with pytest.raises(BertfitError, match=r"train.csv: the header names column 'text' more than once"):
        load_dataset(_data(tmp_path, [(t, t, lab) for t, lab in ROWS], header=("text", "text", "label")), seed=0)


def test_a_header_repeated_mid_file_is_refused_with_its_line(tmp_path):
    with pytest.raises(BertfitError, match=r"train.csv line 4: the header row again"):
        load_dataset(_data(tmp_path, ROWS[:2] + [("text", "label")] + ROWS[2:]), seed=0)


@pytest.mark.parametrize("label", ["NaN", "nan", "null"])
def test_a_missing_value_marker_is_not_a_class(tmp_path, label):
    with pytest.raises(BertfitError, match=rf"train.csv row 3: label '{label}' .* is a missing value"):
        load_dataset(_data(tmp_path, ROWS[:2] + [("orphan", label)] + ROWS[2:]), seed=0)


def test_a_label_only_in_the_test_file_is_refused(tmp_path):
    with pytest.raises(BertfitError, match=r"test.csv row 2: label 'weather' never occurs in the training data"):
        load_dataset(_data(tmp_path, ROWS, [("stocks fall", "business"), ("rain again", "weather")]), seed=0)


def test_declared_label_names_still_allow_a_class_missing_from_train(tmp_path):
    config = load_config(None, ["--data.train", str(write_csv(tmp_path / "t.csv", ROWS)),
                                "--data.label_names", "business,sports,tech,weather"]).data
    assert load_dataset(config, seed=0).labels.names[-1] == "weather"


@pytest.mark.parametrize("damage", ["bad-json", "missing-key", "truncated-weights", "bad-config"])
def test_a_damaged_model_folder_is_one_line(run_copy, damage):
    from bertfit.infer.predictor import Predictor

    model = run_copy / "model"
    if damage == "bad-json":
        (model / "bertfit.json").write_text("{not json")
    elif damage == "missing-key":
        meta = json.loads((model / "bertfit.json").read_text())
        del meta["labels"]
        (model / "bertfit.json").write_text(json.dumps(meta))
    elif damage == "truncated-weights":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (model / "config.json").write_text("{")
    with pytest.raises(BertfitError, match=r"model.*(damaged|train)"):
        Predictor(run_copy, backend="torch")


@pytest.mark.parametrize("where, value", [("bertfit.json", "../../../etc"), ("bertfit.json", "/etc"),
                                          ("export.json", "../../outside.onnx")])
def test_paths_named_in_run_files_stay_inside_the_run(run_copy, where, value):
    from bertfit.artifacts import read_export_meta, read_model_meta

    meta = json.loads((run_copy / "model" / "bertfit.json").read_text())
    if where == "bertfit.json":
        (run_copy / "model" / "bertfit.json").write_text(json.dumps({**meta, "adapter": value}))
        with pytest.raises(BertfitError, match="must be a path inside its folder"):
            read_model_meta(run_copy)
    else:
        (run_copy / "export").mkdir()
        (run_copy / "export" / "export.json").write_text(json.dumps({**meta, "pad_token_id": 0, "files": {"fp32": value}}))
        with pytest.raises(BertfitError, match="files.onnx-fp32 .* must be a path inside its folder"):
            read_export_meta(run_copy / "export")


def test_resume_from_a_truncated_training_state_is_one_line(run_copy, capsys):
    state = run_copy / "checkpoint" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert main(["train", "--resume", str(run_copy)]) == 2
    assert "training_state.pt: damaged checkpoint" in capsys.readouterr().err


def test_predict_out_into_a_missing_folder_is_refused_before_any_work(tiny_run, tmp_path, capsys, monkeypatch):
    from bertfit.infer import predictor

    monkeypatch.setattr(predictor.Predictor, "__init__", lambda *a, **k: pytest.fail("computed before checking --out"))
    assert main(["predict", str(tiny_run), "hello", "--out", str(tmp_path / "missing" / "p.csv")]) == 2
    assert "--out: folder" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "   "])
def test_predict_refuses_an_empty_text_like_training(tiny_run, capsys, text):
    assert main(["predict", str(tiny_run), text]) == 2
    assert "text 0 is empty" in capsys.readouterr().err


def test_an_unfinished_run_warns(run_copy, caplog):
    from bertfit.infer.predictor import Predictor

    (run_copy / "results.json").unlink()  # a crash between writing model/ and results.json
    with caplog.at_level(logging.WARNING):
        Predictor(run_copy, backend="torch")
    assert "has not finished" in caplog.text and "--resume" in caplog.text


def test_a_finished_run_does_not_warn(tiny_run, caplog):
    from bertfit.infer.predictor import Predictor

    with caplog.at_level(logging.WARNING):
        Predictor(tiny_run, backend="torch")
    assert "has not finished" not in caplog.text


def test_weights_follow_the_umask(tiny_run):
    assert (tiny_run / "model" / "model.safetensors").stat().st_mode & 0o777 == \
        (tiny_run / "model" / "bertfit.json").stat().st_mode & 0o777


def test_resume_cleans_stale_staging_folders(run_copy):
    from bertfit.training.recipe import train

    stale = run_copy / ".model.tmp-crashed"
    shutil.copytree(run_copy / "model", stale)
    (run_copy / "results.json").unlink()
    train(resume=run_copy)  # the run had finished its steps: resuming only re-tests and rewrites results
    assert not stale.exists() and (run_copy / "results.json").is_file()


def test_drop_duplicates_never_writes_over_an_input_or_through_a_link(tmp_path, capsys):
    from bertfit.cli.main import main

    data = tmp_path / "data"
    data.mkdir()
    original = "text,label,extra\ngood film,pos,1\ngood film,pos,2\nbad film,neg,3\n"
    (data / "train.csv").write_text(original)
    assert main(["inspect", "--data", str(data / "train.csv"), "--drop-duplicates", str(data)]) == 2
    assert "already exists" in capsys.readouterr().err and (data / "train.csv").read_text() == original
    outside = tmp_path / "outside.csv"
    outside.write_text("keep me\n")
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "train.csv").symlink_to(outside)
    assert main(["inspect", "--data", str(data / "train.csv"), "--drop-duplicates", str(tmp_path / "clean")]) == 2
    assert outside.read_text() == "keep me\n"
    assert main(["inspect", "--data", str(data / "train.csv"), "--drop-duplicates", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "train.csv").read_text().count("good film") == 1
