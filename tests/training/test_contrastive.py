"""The contrastive (few-shot) method: pairs, and a run that trains, resumes, evaluates and exports like any other."""

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from bertfit.artifacts import load_model
from bertfit.config import load_config
from bertfit.deploy.check import check_sample
from bertfit.errors import BertfitError
from bertfit.evaluate.model_card import render_model_card
from bertfit.evaluate.run import evaluate_run
from bertfit.infer.predictor import Predictor
from bertfit.model import load_encoder
from bertfit.training.contrastive import draw_pairs, pair_cosines
from bertfit.training.recipe import train
from bertfit.training.stack import build_stack
from conftest import write_csv
from interrupts import stop_at


def test_pairs_alternate_same_and_different_labels_and_repeat():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    pairs = draw_pairs(labels, 70, seed=3)
    first, second, same = pairs.T
    assert (same == (np.arange(70) % 2 == 0)).all()
    assert ((labels[first] == labels[second]) == same.astype(bool)).all()
    assert (first != second).all()  # every class has two texts or more: nobody is paired with itself
    assert np.bincount(first, minlength=7).tolist() == [10] * 7  # every text an anchor in turn
    assert (draw_pairs(labels, 70, seed=3) == pairs).all() and not (draw_pairs(labels, 70, seed=4) == pairs).all()


def test_a_text_in_several_pairs_is_encoded_once_to_the_same_similarities_and_gradients(tiny_model_dir):
    import torch
    import torch.nn.functional as F

    from bertfit.data.batching import PaddedBatches, tokenize
    from bertfit.infer.engine import InferenceContext
    from bertfit.model import TextClassifier, load_encoder, load_tokenizer
    from bertfit.runtime.device import choose_precision

    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = ["the match ended in a draw", "shares fell sharply", "a new chip", "rebels seized the capital city"]
    batches = PaddedBatches(tokenize(texts, [0, 0, 1, 1], tokenizer, 64, cache_dir=None), tokenizer.pad_token_id)
    model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=2).eval()  # eval: no dropout to differ
    context = InferenceContext(torch.device("cpu"), choose_precision("fp32", torch.device("cpu")), 0, 64)
    pairs = np.array([[0, 1, 1], [2, 0, 0], [0, 3, 0], [3, 2, 1], [1, 3, 0]])  # text 0 in three pairs, 3 in three

    def gradients(cosines):
        model.zero_grad()
        cosines.sum().backward()
        return torch.cat([p.grad.flatten() for p in model.encoder.parameters() if p.grad is not None])

    encoded, encode = [], model.encode
    model.encode = lambda input_ids, attention_mask: encoded.append(len(input_ids)) or encode(input_ids, attention_mask)
    shared = pair_cosines(model, batches, pairs, context)
    model.encode = encode
    assert encoded == [4]  # 10 places, 4 distinct texts
    shared_grad = gradients(shared)

    def alone(row):  # a batch of one text: no other text, no padding
        batch = batches[np.array([row])]
        return model.encode(batch["input_ids"], batch["attention_mask"])

    one_by_one = torch.cat([F.cosine_similarity(alone(first), alone(second)) for first, second, _ in pairs])
    assert torch.allclose(shared, one_by_one, atol=1e-5)
    assert torch.allclose(shared_grad, gradients(one_by_one), atol=1e-5)


@pytest.fixture
def few_shot(tiny_model_dir, ag_news_rows, tmp_path):
    """Flags of a run with no training settings on 12 texts per class (48 rows), tested on 100 more."""
    by_label: dict[str, list] = {}
    for row in ag_news_rows[:300]:
        by_label.setdefault(row[1], []).append(row)
    write_csv(tmp_path / "train.csv", [row for rows in by_label.values() for row in rows[:12]])
    write_csv(tmp_path / "test.csv", ag_news_rows[300:])

    def flags(name: str) -> list[str]:
        return ["--model.name", str(tiny_model_dir), "--model.max_length", "64", "--output_dir", str(tmp_path / "runs"),
                "--cache_dir", str(tmp_path / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
                "--data.train", str(tmp_path / "train.csv"), "--data.test", str(tmp_path / "test.csv"), "--name", name,
                "--train.checkpoint_every_steps", "20", "--train.contrastive_pairs", "320",  # 20 pair steps: fast
                "--train.keep_checkpoint", "true"]
    return flags


def test_few_labels_train_contrastively_resume_evaluate_and_export(few_shot, tiny_model_dir, tmp_path, monkeypatch,
                                                                    caplog):
    with caplog.at_level(logging.INFO, logger="bertfit.training"):
        straight = train(load_config(None, few_shot("straight")))
    assert "train.method contrastive" in caplog.text and "contrastive: encoder tuned on" in caplog.text
    saved = yaml.safe_load((straight.run_dir / "config.yaml").read_text())
    assert saved["train"]["method"] == "contrastive" and saved["train"]["lr"] == 1e-2 and saved["train"]["batch_size"] == 4
    assert straight.steps >= 150 and straight.test["accuracy"] > 0
    # Few-shot: every labelled row trains (as in SetFit), none is held out, and the run says so.
    assert "few-shot: all 48 labelled rows train the model" in caplog.text and saved["data"]["validation_fraction"] == 0
    results = json.loads((straight.run_dir / "results.json").read_text())
    assert results["rows"] == {"train": 48, "test": 100} and straight.validation == {} and results["stack"] is None
    history = [json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any(key.startswith("eval/") for record in history for key in record)
    tuned, base = load_file(straight.run_dir / "model" / "model.safetensors"), load_encoder(str(tiny_model_dir)).state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(tuned[f"encoder.{key}"], base[key])  # the encoder stage moved the encoder
    # The head kept is the last one, not the "best" epoch on a few validation rows: model/ is the final step's.
    final = load_file(straight.run_dir / "checkpoint" / "model.safetensors")
    assert straight.best_step == straight.steps and torch.equal(tuned["head.weight"], final["head.weight"])

    # Ctrl-C in the head stage, then resume: the same weights as the run that never stopped.
    with monkeypatch.context() as patch:
        stop_at(patch, 50)
        stopped = train(load_config(None, few_shot("stopped")))
    assert stopped.interrupted and stopped.steps == 50
    resumed = train(resume=stopped.run_dir)
    assert resumed.steps == straight.steps
    expected = load_file(straight.run_dir / "checkpoint" / "model.safetensors")
    actual = load_file(resumed.run_dir / "checkpoint" / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)

    # The saved model is a plain encoder + head: evaluate, predict and export read it as any run's.
    evaluated = evaluate_run(straight.run_dir, str(tmp_path / "test.csv"), baselines=False)
    assert evaluated["accuracy"] == pytest.approx(straight.test["accuracy"])
    assert evaluated["temperature"] == 1.0  # no validation rows to fit one on: not calibrated
    assert (straight.run_dir / "eval" / "test" / "curves.png").stat().st_size > 0
    with pytest.raises(BertfitError, match="held out no validation rows"):
        build_stack(straight.run_dir)
    probabilities = Predictor(straight.run_dir).predict_proba(["stocks fell", "the team won the cup"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    pytest.importorskip("onnxruntime")
    from bertfit.deploy.export import export_run

    meta = export_run(straight.run_dir, int8=False, max_rows=20)
    assert meta.check and meta.model.labels == Predictor(straight.run_dir).labels.names
    card = render_model_card(straight.run_dir).read_text(encoding="utf-8")
    assert "none held out (data.validation_fraction 0)" in card and "not fitted: no validation rows" in card
    # With no test data either, the export's check can only read training rows, and says so.
    saved["data"]["test"] = None
    (straight.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert check_sample(straight.run_dir, load_model(straight.run_dir), 20).source == "train (20)"
