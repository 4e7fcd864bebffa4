# ruff: noqa: F811  (pytest fixtures imported from hostile_support are redefined as test arguments)
"""Odd arguments and damaged files end in one line naming the file or field (exit 2), never a traceback,
and never a silent guess (a model with no tokenizer, labels read letter by letter)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hostile_support import run_copy, tiny_run  # noqa: F401  (fixtures)

from bertfit.cli.main import main
from bertfit.config import DataConfig
from bertfit.data import read
from bertfit.errors import BertfitError


def test_a_run_name_too_long_for_a_folder_is_one_line(tmp_path, capsys):
    assert main(["train", "--name", "x" * 300, "--output_dir", str(tmp_path)]) == 2
    assert "name: must be one folder name" in capsys.readouterr().err


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    from bertfit import artifacts
    from bertfit.config import RunConfig

    (tmp_path / "runs").write_text("a file")
    with pytest.raises(BertfitError, match="output_dir: .* is a file"):
        artifacts.check_run_dir_free(RunConfig(name="r", output_dir=str(tmp_path / "runs")), overwrite=False)


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "mismatched"])
def test_a_damaged_token_cache_is_rebuilt_with_a_warning(tiny_model_dir, tmp_path, caplog, damage):
    from transformers import AutoTokenizer

    from bertfit.data.batching import tokenize
    from bertfit.data.windows import TextCut

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts, cut = ["a short text", "another one here"], TextCut(16)
    expected = np.array(tokenize(texts, [0, 1], tokenizer, cut, tmp_path).ids)  # a copy: the cache is memory-mapped
    (folder,) = (tmp_path / "tokens").iterdir()
    target = folder / ("offsets.npy" if damage == "mismatched" else "ids.npy")
    data = target.read_bytes()
    target.unlink()
    if damage == "truncated":
        target.write_bytes(data[:40])
    elif damage == "zeroed":
        target.write_bytes(b"\0" * len(data))
    else:
        np.save(target, np.array([0, 1, 999]))
    with caplog.at_level(logging.WARNING):
        again = tokenize(texts, [0, 1], tokenizer, cut, tmp_path)
    assert "token cache" in caplog.text and "rebuilding" in caplog.text
    assert np.array_equal(np.asarray(again.ids), expected)


@pytest.mark.parametrize("content, message", [
    ('{"text": ["a", "b"], "label": ["x"]}', "different lengths"),
    ('{"text": 5, "label": 7}', "column 'text' is int, not a list"),
])
def test_a_json_of_bad_columns_is_one_line(tmp_path, content, message):
    path = tmp_path / "train.json"
    path.write_text(content)
    with pytest.raises(BertfitError, match=message):
        read.read_file(path, DataConfig())


def test_a_broken_jsonl_line_is_reported_with_its_own_number(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"text": f"t{i}", "label": "a"}) for i in range(60)]
    lines[56] = '{"text": "broken'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BertfitError, match=r"train.jsonl line 57: invalid JSON"):
        read.read_file(path, DataConfig())


@pytest.mark.parametrize("field, value", [("labels", 3), ("labels", "abc"), ("labels", ["a", "a"]),
                                          ("max_length", "32"), ("max_length", -1), ("temperature", "hot"),
                                          ("temperature", 0), ("pooling", "median"), ("problem_type", "both")])
def test_wrong_types_in_bertfit_json_are_refused(run_copy, capsys, field, value):
    path = run_copy / "model" / "bertfit.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    assert main(["predict", str(run_copy), "hello", "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    assert "bertfit.json" in err and field in err and "Traceback" not in err


def test_a_negative_max_length_in_export_json_is_refused(run_copy):
    from bertfit.artifacts import read_export_meta

    meta = json.loads((run_copy / "model" / "bertfit.json").read_text())
    (run_copy / "export").mkdir()
    (run_copy / "export" / "export.json").write_text(json.dumps({**meta, "max_length": -5, "pad_token_id": 0,
                                                                  "files": {"onnx-fp32": "model.onnx"}}))
    with pytest.raises(BertfitError, match="export.json: max_length must be a positive integer"):
        read_export_meta(run_copy / "export")


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_damaged_onnx_file_at_predict_is_one_line(run_copy, capsys, damage):
    from bertfit.deploy.export import export_run

    export_run(run_copy, int8=True, max_rows=16)
    path = run_copy / "export" / "model-int8.onnx"
    if not path.is_file():
        (path,) = [p for p in (run_copy / "export").glob("*int8*.onnx")]
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 3] if damage == "truncated" else b"\0" * size)
    assert main(["predict", str(run_copy), "hello", "--backend", "onnx-int8"]) == 2
    assert "damaged onnx-int8 export" in capsys.readouterr().err


@pytest.mark.parametrize("file, content", [("config.yaml", "train: [unclosed"), ("config.yaml", "just a string"),
                                           ("config.yaml", "train:\n  lr: fast\n"), ("metrics.jsonl", '{"step": 1}\n{nope\n'),
                                           ("metrics.jsonl", "[1, 2]\n")])
def test_garbage_in_run_files_is_one_line_naming_the_file(run_copy, capsys, file, content):
    (run_copy / file).write_text(content)
    code = main(["evaluate", str(run_copy), "--split", "train", "--max-rows", "8"])
    err = capsys.readouterr().err
    assert code == 2 and file in err and "Traceback" not in err


def test_garbage_env_json_at_resume_is_one_line(run_copy, capsys):
    (run_copy / "env.json").write_text("{garbage")
    (run_copy / "results.json").unlink()
    assert main(["train", "--resume", str(run_copy)]) == 2
    assert "env.json" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_serve_refuses_a_port_outside_the_range(tiny_run, capsys, port):
    assert main(["serve", str(tiny_run), "--port", port]) == 2
    assert "port: must be in 0..65535" in capsys.readouterr().err


def test_explain_with_no_steps_is_one_line(tiny_run, capsys):
    assert main(["explain", str(tiny_run), "some text", "--steps", "0"]) == 2
    assert "steps: must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "-3"])
def test_predict_and_export_refuse_a_batch_size_below_one(tiny_run, capsys, size):
    assert main(["predict", str(tiny_run), "hello", "--batch-size", size, "--backend", "torch"]) == 2
    assert "batch-size: must be" in capsys.readouterr().err
    assert main(["export", str(tiny_run), "--onnx", "--batch-size", size]) == 2
    assert "batch" in capsys.readouterr().err


def test_a_model_without_its_tokenizer_is_refused(run_copy, capsys):
    (run_copy / "model" / "tokenizer.json").unlink()
    assert main(["predict", str(run_copy), "hello world", "--backend", "torch"]) == 2
    assert "tokenizer" in capsys.readouterr().err
