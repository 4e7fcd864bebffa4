"""The typed run records: bertfit.json files of earlier versions still load, and round trips keep every field."""

from __future__ import annotations

import json

import pytest

from bertfit.artifacts import read_model_meta, update_model_meta
from bertfit.config import MULTI_LABEL
from bertfit.errors import BertfitError
from bertfit.meta import ExportMeta, ModelMeta

# bertfit.json as written before the typed record (and older files that lack later fields).
WRITTEN_BY_0_1 = {"bertfit_version": "0.1.0", "labels": ["neg", "pos"], "base_model": "embedded", "pooling": "mean",
                  "dropout": 0.1, "max_length": 128, "keep_head": 1.0, "window_stride": 0, "window_pooling": "mean",
                  "problem_type": "single_label_classification", "temperature": 1.0, "step": 40}
OLDEST = {"labels": ["a", "b", "c"], "base_model": "bert-base-uncased", "pooling": "cls", "dropout": 0.2, "max_length": 64}


@pytest.mark.parametrize("written", [WRITTEN_BY_0_1, OLDEST])
def test_files_of_earlier_versions_load_and_round_trip(tmp_path, written):
    (tmp_path / "bertfit.json").write_text(json.dumps(written))
    meta = read_model_meta(tmp_path)
    assert meta.labels == tuple(written["labels"]) and meta.max_length == written["max_length"]
    assert meta.temperature == 1.0 and meta.windows is None and not meta.multi_label
    assert ModelMeta.from_dict(meta.to_dict(), "x") == meta
    updated = update_model_meta(tmp_path, temperature=1.7)
    assert read_model_meta(tmp_path) == updated and updated.temperature == 1.7 and updated.labels == meta.labels


def test_a_damaged_file_names_itself(tmp_path):
    (tmp_path / "bertfit.json").write_text(json.dumps({"labels": ["a", "b"]}))  # no max_length, no base_model
    with pytest.raises(BertfitError, match="bertfit.json.*damaged"):
        read_model_meta(tmp_path)
    (tmp_path / "bertfit.json").write_text("{not json")
    with pytest.raises(BertfitError, match="bertfit.json: cannot be read"):
        read_model_meta(tmp_path)


def test_windows_thresholds_and_export_record():
    meta = ModelMeta(("x", "y"), "embedded", 32, window_stride=7, window_pooling="max", problem_type=MULTI_LABEL,
                     thresholds={"y": 0.3}, step=9)
    assert (meta.windows.stride, meta.windows.pooling) == (7, "max") and meta.multi_label
    assert meta.label_thresholds() == [0.5, 0.3]
    export = ExportMeta(meta, pad_token_id=0, files={"onnx-fp32": "model.onnx"}, opset=17)
    data = export.to_dict()
    assert data["model_step"] == 9 and data["window_stride"] == 7  # the flat export.json layout of earlier versions
    back = ExportMeta.from_dict(data, "export.json")
    assert back.model.step == 9 and back.files == export.files and back.model.labels == meta.labels


def test_export_json_before_more_engines_loads_with_variant_names(tmp_path):
    """export.json of the ONNX-only exporter: files and check keyed by precision; they load as onnx-* variants."""
    from bertfit.artifacts import read_export_meta

    old = {"labels": ["a", "b"], "base_model": "embedded", "max_length": 64, "model_step": 3, "pad_token_id": 0,
           "opset": 17, "files": {"fp32": "model.onnx", "int8": "model.int8.onnx"},
           "check": {"split": "test", "rows": 10, "torch_accuracy": 0.5, "fp32": {"accuracy": 0.5}, "int8": {"accuracy": 0.4}}}
    (tmp_path / "export.json").write_text(json.dumps(old))
    meta = read_export_meta(tmp_path)
    assert meta.files == {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}
    assert meta.check["onnx-int8"] == {"accuracy": 0.4} and meta.choice is None and meta.selection is None
    # int8 lost 10 points against PyTorch (0.4 vs 0.5): auto serves fp32, which lost none, and says why int8 did not serve
    assert meta.served_variant() == ("onnx-fp32", [meta.accuracy_problem("onnx-int8")])
    assert "-10.00 accuracy points" in meta.accuracy_problem("onnx-int8")
    assert ExportMeta.from_dict(meta.to_dict(), "x") == meta
    chosen = ExportMeta(meta.model, 0, meta.files, 17, choice="torch", selection={"choice": "torch"})
    assert ExportMeta.from_dict(chosen.to_dict(), "x").default_variant() == "torch"


def test_a_stack_record_round_trips_through_bertfit_and_export_json(tmp_path):
    from bertfit.meta import StackMeta

    stack = StackMeta("stack/tfidf.npz", 0.35, 1.0, "f1_macro", {"model": {"f1_macro": 0.8}, "tfidf": {"f1_macro": 0.9},
                                                                  "stack": {"f1_macro": 0.92}})
    meta = ModelMeta(("x", "y"), "embedded", 32, step=4, stack=stack)
    (tmp_path / "bertfit.json").write_text(json.dumps(meta.to_dict()))
    assert read_model_meta(tmp_path) == meta and read_model_meta(tmp_path).stack == stack
    export = ExportMeta(meta, pad_token_id=0, files={"onnx-fp32": "model.onnx"}, opset=17)
    assert ExportMeta.from_dict(json.loads(json.dumps(export.to_dict())), "export.json").model.stack == stack
    assert update_model_meta(tmp_path, stack=None).stack is None and "stack" not in json.loads(
        (tmp_path / "bertfit.json").read_text())


@pytest.mark.parametrize("record, problem", [
    (["stack/tfidf.npz"], "bad stack record"),
    ({"model_weight": 0.5}, "bad stack record"),
    ({"file": "stack/tfidf.npz", "model_weight": "half"}, "bad stack record"),
    ({"file": "stack/tfidf.npz", "model_weight": 0.5, "temperature": 0}, "stack.temperature > 0"),
    ({"file": "/etc/passwd", "model_weight": 0.5}, "stack.file '/etc/passwd' must be a path inside"),
])
def test_a_bad_stack_record_is_one_line_naming_the_file(tmp_path, record, problem):
    (tmp_path / "bertfit.json").write_text(json.dumps({**WRITTEN_BY_0_1, "stack": record}))
    with pytest.raises(BertfitError, match="bertfit.json") as error:
        read_model_meta(tmp_path)
    assert problem in str(error.value) and "\n" not in str(error.value)
