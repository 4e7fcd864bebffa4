"""Head+tail truncation of long texts (model.keep_head)."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from bertfit.data.batching import tokenize
from bertfit.data.windows import TextCut


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_head_tail_keeps_both_ends(tokenizer, tmp_path):
    text = " ".join(["alpha"] * 30 + ["middle"] * 30 + ["omega"] * 30)
    full = tokenizer(text)["input_ids"]
    split = tokenize([text, "short text"], [0, 1], tokenizer, TextCut(16, keep_head=0.25), tmp_path)
    ids = split.ids[split.offsets[0]:split.offsets[1]].tolist()
    assert len(ids) == 16 and ids[0] == full[0] and ids[-1] == full[-1]  # [CLS] ... [SEP]
    # 14 tokens between the specials: round(3.5) = 4 from the start, 10 from the end.
    assert ids[1:5] == full[1:5] and ids[5:15] == full[-11:-1]
    short = split.ids[split.offsets[1]:split.offsets[2]].tolist()
    assert short == tokenizer("short text")["input_ids"]  # short texts are untouched


def test_keep_head_one_is_plain_truncation_and_cached_apart(tokenizer, tmp_path):
    text = " ".join(f"token{i}" for i in range(100))
    plain = tokenize([text], [0], tokenizer, TextCut(16), tmp_path)
    head = tokenize([text], [0], tokenizer, TextCut(16, keep_head=1.0), tmp_path)
    tail = tokenize([text], [0], tokenizer, TextCut(16, keep_head=0.0), tmp_path)
    np.testing.assert_array_equal(plain.ids, head.ids)
    assert plain.ids.tolist() == tokenizer(text, truncation=True, max_length=16)["input_ids"]
    assert tail.ids[1:-1].tolist() == tokenizer(text)["input_ids"][-15:-1]  # the cache did not hand back the head version
