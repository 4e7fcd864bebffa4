"""More CPU backends (OpenVINO, CTranslate2) behind one Predictor, and `bertfit export --target auto`:
every variant predicts like PyTorch, the choice is timed, recorded and served, a missing engine is skipped."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

# max |p - p_torch| per precision on the tiny random BERT (int8 rounding moves its flat probabilities a little)
TOLERANCE = {"fp32": 1e-4, "int8": 0.2}
FAST_TIMING = {"max_rows": 30, "time_rows": 10, "time_rounds": 1}


def fresh_run(source, folder):
    """A copy of the tiny trained run without its export."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("export"))
    return folder


@pytest.fixture(scope="module")
def auto_export(tiny_exported_run, tmp_path_factory):
    """`bertfit export RUN --target auto` on a copy of the tiny run: (run, what the CLI printed)."""
    from bertfit.cli.main import main

    run = fresh_run(tiny_exported_run, tmp_path_factory.mktemp("auto") / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", str(run), "--target", "auto", "--max-rows", "60", "--time-rows", "20",
                     "--time-rounds", "1"]) == 0
    return run, printed.getvalue()


@pytest.fixture(scope="module")
def auto_run(auto_export):
    return auto_export[0]


def test_every_exported_variant_predicts_like_torch(auto_run, ag_news_rows):
    from bertfit.infer.predictor import Predictor

    texts = ["hi"] + [text for text, _ in ag_news_rows[:12]] + [" ".join(["word"] * 300)]
    expected = Predictor(auto_run, backend="torch", batch_size=5).predict_proba(texts)
    files = json.loads((auto_run / "export" / "export.json").read_text())["files"]
    engines = {"onnx", *[engine for engine in ("openvino", "ctranslate2") if _importable(engine)]}
    assert {variant.split("-")[0].replace("ct2", "ctranslate2") for variant in files} == engines
    for variant in files:
        predictor = Predictor(auto_run, backend=variant, batch_size=5)
        assert predictor.backend_name == variant
        got = predictor.predict_proba(texts)
        assert np.abs(got - expected).max() < TOLERANCE[variant.split("-")[1]], variant
        assert [p.text for p in predictor.predict(texts)] == texts


def test_auto_times_every_candidate_records_the_choice_and_serves_it(auto_run):
    from bertfit.infer.predictor import Predictor

    meta = json.loads((auto_run / "export" / "export.json").read_text())
    selection = meta["selection"]
    assert set(selection["timings"]) == {"torch", *meta["files"]}
    assert selection["cpu"]["flags"] is not None and "int8_dot_product" in selection["cpu"]
    assert selection["settings"]["max_accuracy_loss"] == 0.5 and selection["skipped"] == {}
    within = [name for name in selection["timings"]
              if name == "torch" or meta["check"][name]["accuracy_change_points"] >= -0.5]
    assert selection["eligible"] == within
    fastest = max(within, key=lambda name: selection["timings"][name]["vs_torch"])
    assert meta["choice"] == selection["choice"] == fastest
    assert Predictor(auto_run).backend_name == fastest.replace("torch", "pytorch")  # predict and serve use the choice
    card = (auto_run / "export" / "README.md").read_text()
    assert f"Chosen: **{fastest}**" in card and "int8 dot product" in card


def test_a_machine_without_an_engine_skips_it_with_the_reason(tiny_exported_run, tmp_path, monkeypatch):
    from bertfit.deploy.export import export_run
    from bertfit.errors import BertfitError

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    run = fresh_run(tiny_exported_run, tmp_path / "run")
    meta = export_run(run, target="auto", **FAST_TIMING)
    assert set(meta.files) == {"onnx-fp32", "onnx-int8"}
    skipped = meta.selection["skipped"]
    assert set(skipped) == {"openvino-fp32", "ct2-fp32", "ct2-int8"}
    assert "bertfit[openvino]" in skipped["openvino-fp32"] and "bertfit[ct2]" in skipped["ct2-int8"]
    assert meta.choice in ("torch", "onnx-fp32", "onnx-int8")
    with pytest.raises(BertfitError, match=r"target openvino: .*pip install 'bertfit\[openvino\]'"):
        export_run(run, target="openvino", max_rows=10)


def test_cli_export_auto_prints_the_check_and_the_choice(auto_export, capsys):
    from bertfit.cli.main import main

    run, out = auto_export
    assert "95% [" in out and "labels differ on" in out and "predict and serve use on a CPU:" in out
    assert main(["export", str(run), "--target", "auto", "--max-accuracy-loss", "-1"]) == 2
    assert "--max-accuracy-loss" in capsys.readouterr().err


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
