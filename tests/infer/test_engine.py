"""The inference engine: eval mode is restored, rows come back in input order, and every path agrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertfit.data.batching import tokenize
from bertfit.data.windows import TextCut, WindowSettings
from bertfit.infer.engine import InferenceContext, eval_mode, row_logits, split_logits
from bertfit.model import TextClassifier, load_encoder, load_tokenizer

TEXTS = ["short", "a somewhat longer text about markets and shares", "mid length text here",
         "the longest text of them all, about a match that ended in a draw after extra time and penalties"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    torch.manual_seed(0)
    return TextClassifier(load_encoder(str(tiny_model_dir)), 3), load_tokenizer(str(tiny_model_dir))


def test_eval_mode_is_restored_even_after_an_error(model_and_tokenizer):
    model, _ = model_and_tokenizer
    model.train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training


def test_batched_rows_come_back_in_input_order(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    context = InferenceContext.cpu(tokenizer.pad_token_id, batch_size=3)
    split = tokenize(TEXTS, np.zeros(len(TEXTS)), tokenizer, TextCut(32))
    batched = row_logits(model, split, context)
    one_by_one = np.concatenate([row_logits(model, tokenize([t], [0], tokenizer, TextCut(32)), context) for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_windows_are_pooled_per_text(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    context = InferenceContext.cpu(tokenizer.pad_token_id, batch_size=4)
    split = tokenize(TEXTS, np.zeros(len(TEXTS)), tokenizer, TextCut(12, windows=WindowSettings(5, "max")))
    assert len(split) > len(TEXTS)
    rows, documents = row_logits(model, split, context), split_logits(model, split, context)
    assert documents.shape == (len(TEXTS), 3)
    for text, (start, end) in enumerate(zip(split.windows[:-1], split.windows[1:])):
        np.testing.assert_allclose(documents[text], rows[start:end].max(0), atol=1e-6)
