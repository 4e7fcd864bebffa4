"""The cold path of `bertfit predict` on an ONNX export: no torch, no transformers, the same tokens and predictions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from bertfit.data.windows import WindowSettings
from bertfit.infer.tokens import TokenizerFile
from bertfit.model import load_tokenizer

CHECK = """
import sys
from bertfit.cli.main import main
code = main(["predict", sys.argv[1], "Shares of Apple rose after strong quarterly earnings"])
heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
print("HEAVY", ",".join(heavy))
sys.exit(code)
"""


def test_predict_on_an_export_imports_neither_torch_nor_transformers(tiny_exported_run):
    done = subprocess.run([sys.executable, "-c", CHECK, str(tiny_exported_run)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY \n" in done.stdout, done.stdout  # nothing heavy was imported
    assert done.stdout.split("\t")[0] in json.loads((tiny_exported_run / "labels.json").read_text())


def test_tokenizer_file_gives_the_ids_of_transformers(tiny_exported_run, ag_news_rows):
    from bertfit.data.batching import tokenize
    from bertfit.data.windows import TextCut

    texts = [text for text, _ in ag_news_rows[:200]] + ["", "  spaces  ", "Ünïcödé café — naïve", "x " * 400]
    ours, theirs = TokenizerFile(tiny_exported_run / "export"), load_tokenizer(str(tiny_exported_run / "model"))
    assert ours.pad_token_id == theirs.pad_token_id
    for options in ({}, {"keep_head": 0.5}, {"windows": WindowSettings(10, "mean")}):
        a, b = (tokenize(texts, np.zeros(len(texts)), t, TextCut(48, **options)) for t in (ours, theirs))
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.offsets, b.offsets)
    assert ours(["a b c"], truncation=False)["input_ids"] == theirs(["a b c"])["input_ids"]


def test_onnx_predictions_match_pytorch(tiny_exported_run, ag_news_rows):
    from bertfit.infer.predictor import Predictor

    texts = [text for text, _ in ag_news_rows[300:340]]
    onnx = Predictor(tiny_exported_run, backend="onnx-fp32")
    torch_path = Predictor(tiny_exported_run, backend="torch", device="cpu")
    np.testing.assert_allclose(onnx.predict_proba(texts), torch_path.predict_proba(texts), atol=1e-5)
