"""Explain attributes the tokens predict reads: a head+tail run's head and tail, a windowed run's every window."""

import numpy as np
import pytest

from bertfit.artifacts import load_model
from bertfit.config import load_config
from bertfit.evaluate.explain import integrated_gradients
from bertfit.infer.predictor import Predictor
from bertfit.infer.tokens import tokenize_like_training
from bertfit.training.recipe import train
from conftest import keyword_rows, tiny_flags, write_csv

LONG = " ".join(text for text, _ in keyword_rows(2, seed=5))  # about 80 words: longer than 24 tokens


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-cut")
    write_csv(root / "train.csv", keyword_rows(60, seed=1))
    base = tiny_flags(tiny_model_dir, root) + ["--data.train", str(root / "train.csv"), "--model.max_length", "24",
                                               "--train.max_steps", "3"]
    cuts = {"head-tail": ["--model.keep_head", "0.25", "--model.window_stride", "0"],
            "windows": ["--model.window_stride", "11", "--model.window_pooling", "max"]}
    return {name: train(load_config(None, base + ["--name", name, *flags])).run_dir for name, flags in cuts.items()}


def test_a_head_and_tail_run_is_explained_on_its_head_and_tail(runs):
    loaded = load_model(runs["head-tail"])
    attribution = integrated_gradients(loaded, LONG, steps=16)
    split = tokenize_like_training(loaded.meta, loaded.tokenizer, [LONG])
    read = loaded.tokenizer.convert_ids_to_tokens(np.asarray(split.ids[split.offsets[0]:split.offsets[1]]).tolist())
    whole = loaded.tokenizer.convert_ids_to_tokens(loaded.tokenizer(LONG)["input_ids"])
    assert attribution.tokens == read and len(read) == 24
    assert read[-2] == whole[-2] and read[1] == whole[1]  # the text's last token is read, as is its first
    assert attribution.completeness_gap < 0.05 * max(1e-3, abs(sum(attribution.scores))) + 1e-3


def test_a_windowed_run_is_explained_over_every_window_pooled_as_predict_pools(runs):
    loaded = load_model(runs["windows"])
    attribution = integrated_gradients(loaded, LONG, steps=16)
    assert tokenize_like_training(loaded.meta, loaded.tokenizer, [LONG]).windows[-1] > 2  # several windows
    assert attribution.tokens == loaded.tokenizer.convert_ids_to_tokens(loaded.tokenizer(LONG)["input_ids"])
    probabilities = Predictor(runs["windows"], device="cpu").predict_proba([LONG])[0]
    names = list(loaded.meta.labels)
    assert attribution.confidence == pytest.approx(probabilities[names.index(attribution.label)], abs=1e-5)
    assert attribution.label == names[int(np.argmax(probabilities))]
    assert attribution.completeness_gap < 0.05 * max(1e-3, abs(sum(attribution.scores))) + 1e-3
