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
from bertfit.data.windows import TextCut
from bertfit.deploy.check import check_sample
from bertfit.errors import BertfitError
from bertfit.evaluate.model_card import render_model_card
from bertfit.evaluate.run import evaluate_run
from bertfit.infer.predictor import Predictor
from bertfit.model import load_encoder
from bertfit.training import contrastive, defaults
from bertfit.training.contrastive import GROUP_LABELS, GROUP_TEXTS_PER_LABEL, draw_groups, group_loss
from bertfit.training.recipe import train
from bertfit.training.stack import build_stack
from conftest import write_csv
from interrupts import stop_at


def test_groups_hold_two_labels_taking_turns_and_every_text_equally_often():
    labels = np.array([0] * 8 + [1] * 4 + [2] * 2)  # label 2 has fewer than GROUP_TEXTS_PER_LABEL texts
    groups = draw_groups(labels, 30, seed=3)
    assert len(groups) == 30 and all((np.diff(group) > 0).all() for group in groups)  # sorted, no text twice
    kinds = [np.unique(labels[group]) for group in groups]
    assert all(len(kind) == GROUP_LABELS for kind in kinds)
    # 30 steps of 2 labels are 20 rounds of 3: each label in 20 steps, with 4 of its texts, or all it has.
    assert np.bincount(np.concatenate(kinds)).tolist() == [20, 20, 20]
    assert all(np.bincount(labels[group])[kind].tolist() == [min(GROUP_TEXTS_PER_LABEL, (labels == k).sum()) for k in kind]
               for group, kind in zip(groups, kinds))
    # Each label's texts in turn: label 0's 8 texts in 10 steps each, label 1's 4 and label 2's 2 in 20.
    assert np.bincount(np.concatenate(groups)).tolist() == [10] * 8 + [20] * 6
    again, other = draw_groups(labels, 30, seed=3), draw_groups(labels, 30, seed=4)
    assert all((a == b).all() for a, b in zip(groups, again))
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(groups, other))


def test_a_group_is_encoded_once_and_weighs_pairs_of_one_label_and_of_two_equally(tiny_model_dir):
    import torch.nn.functional as F

    from bertfit.data.batching import PaddedBatches, tokenize
    from bertfit.infer.engine import InferenceContext
    from bertfit.model import TextClassifier, load_encoder, load_tokenizer
    from bertfit.runtime.device import choose_precision

    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = ["the match ended in a draw", "shares fell sharply", "a new chip", "rebels seized the capital city", "ok"]
    labels = np.array([0, 0, 1, 1, 1])
    batches = PaddedBatches(tokenize(texts, labels.tolist(), tokenizer, TextCut(64)), tokenizer.pad_token_id)
    model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=2).eval()  # eval: no dropout to differ
    context = InferenceContext(torch.device("cpu"), choose_precision("fp32", torch.device("cpu")), 0, 64)
    group = np.array([0, 1, 2, 3])  # pairs of one label: (0, 1), (2, 3); of two: the other 4

    def gradients(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.encoder.parameters() if p.grad is not None])

    encoded, encode = [], model.encode
    model.encode = lambda input_ids, attention_mask: encoded.append(len(input_ids)) or encode(input_ids, attention_mask)
    loss = group_loss(model, batches[group], context)
    model.encode = encode
    assert encoded == [4]  # 6 pairs, one encoder call of the 4 texts
    grouped = gradients(loss)

    def alone(row):  # a batch of one text: no other text, no padding
        batch = batches[np.array([row])]
        return model.encode(batch["input_ids"], batch["attention_mask"])

    def cosine(first, second):
        return F.cosine_similarity(alone(first), alone(second))

    one_label = torch.cat([(cosine(0, 1) - 1) ** 2, (cosine(2, 3) - 1) ** 2]).mean()
    two_labels = torch.cat([cosine(a, b) ** 2 for a in (0, 1) for b in (2, 3)]).mean()
    expected = (one_label + two_labels) / 2
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped, gradients(expected), atol=1e-5, rtol=1e-4)


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
                "--train.checkpoint_every_steps", "20", "--train.keep_checkpoint", "true"]
    return flags


def test_few_labels_train_contrastively_resume_evaluate_and_export(few_shot, tiny_model_dir, tmp_path, monkeypatch,
                                                                    caplog):
    with caplog.at_level(logging.INFO, logger="bertfit.training"):
        straight = train(load_config(None, few_shot("straight")))
    assert "train.method contrastive" in caplog.text and "contrastive: encoder tuned on" in caplog.text
    saved = yaml.safe_load((straight.run_dir / "config.yaml").read_text())
    assert saved["train"]["method"] == "contrastive" and saved["train"]["lr"] == 1e-2 and saved["train"]["batch_size"] == 4
    assert saved["train"]["contrastive_lr"] == 4e-5 and "train.contrastive_lr 4e-05" in caplog.text  # a small encoder's
    # The encoder stage's budget follows the rows of each label: 12 of each of 4.
    steps = defaults.contrastive_steps((12, 12, 12, 12))
    assert saved["train"]["contrastive_steps"] == steps and f"texts in {steps} steps" in caplog.text
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
    words = "embeddings.word_embeddings.weight"  # but not the word vectors (frozen, or AdamW's decay would shrink them)
    assert torch.equal(tuned[f"encoder.{words}"], base[words])
    # The head kept is the last one, not the "best" epoch on a few validation rows: model/ is the final step's.
    final = load_file(straight.run_dir / "checkpoint" / "model.safetensors")
    assert straight.best_step == straight.steps and torch.equal(tuned["head.weight"], final["head.weight"])

    # Ctrl-C in the head stage, then resume: the same weights as the run that never stopped. One loop trains both
    # stages: its 50th step in the head stage is its step `steps + 50`.
    with monkeypatch.context() as patch:
        stop_at(patch, steps + 50)
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


def test_the_encoder_stage_resumes_after_ctrl_c_or_a_crash(few_shot, tmp_path, monkeypatch, caplog):
    """A stage of thousands of steps is not lost: Ctrl-C there, or a crash, then `--resume` goes on from its last
    checkpoint (Ctrl-C's, or the one every train.checkpoint_every_steps, 10 here) to the run that never stopped."""
    steps = 40
    shorter = ["--train.contrastive_steps", str(steps), "--train.checkpoint_every_steps", "10", "--train.epochs", "2"]
    straight = train(load_config(None, [*few_shot("straight"), *shorter]))
    expected = load_file(straight.run_dir / "checkpoint" / "model.safetensors")
    for how, stopped_at, resumed_at in (("interrupt", 25, 25), ("crash", 25, 20)):
        with monkeypatch.context() as patch:
            stop_at(patch, stopped_at, how, target=(contrastive, "group_loss"))
            if how == "crash":
                with pytest.raises(RuntimeError, match="simulated crash"):
                    train(load_config(None, [*few_shot(how), *shorter]))
                stopped = None
            else:
                stopped = train(load_config(None, [*few_shot(how), *shorter]))
        if stopped is not None:
            assert stopped.interrupted and stopped.steps == 0 and not (stopped.run_dir / "model").exists()
        with caplog.at_level(logging.INFO, logger="bertfit.training"):
            caplog.clear()
            resumed = train(resume=tmp_path / "runs" / how)
        assert f"resuming the encoder stage of {tmp_path / 'runs' / how} at step {resumed_at} of {steps}" in caplog.text
        assert resumed.steps == straight.steps and resumed.test["accuracy"] == pytest.approx(straight.test["accuracy"])
        actual = load_file(resumed.run_dir / "checkpoint" / "model.safetensors")
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)


def _stage_parts(tiny_model_dir):
    """A model, four labelled texts and a CPU context: what tune_encoder takes, without a run."""
    from bertfit.data.batching import tokenize
    from bertfit.infer.engine import InferenceContext
    from bertfit.model import TextClassifier, load_tokenizer
    from bertfit.runtime.device import choose_precision

    tokenizer = load_tokenizer(str(tiny_model_dir))
    split = tokenize(["good film", "bad film", "a great cast", "dull"], [0, 1, 0, 1], tokenizer, TextCut(32))
    model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=2)
    context = InferenceContext(torch.device("cpu"), choose_precision("fp32", torch.device("cpu")), tokenizer.pad_token_id, 32)
    return model, split, context


def test_the_encoder_stage_shows_its_progress(tiny_model_dir, capsys):
    """Thousands of steps at 64 rows a class: the stage shows a bar (train.progress), as the loop does."""
    model, split, context = _stage_parts(tiny_model_dir)
    for shown in (True, False):
        config = load_config(None, ["--train.contrastive_steps", "3", "--train.contrastive_lr", "4e-5",
                                    "--train.progress", str(shown).lower()])
        contrastive.tune_encoder(model, split, config, context)
        assert ("contrastive: 100%" in capsys.readouterr().err) == shown


def test_the_encoder_stage_learns_at_train_contrastive_lr(tiny_model_dir):
    """AdamW's steps scale with the rate: 25x the rate moves the encoder about 25x as far in the same steps."""
    key, moved = "encoder.layer.0.attention.self.query.weight", []
    for rate in ("4e-5", "1e-3"):
        model, split, context = _stage_parts(tiny_model_dir)
        before = dict(model.encoder.named_parameters())[key].detach().clone()
        config = load_config(None, ["--train.contrastive_steps", "4", "--train.contrastive_lr", rate,
                                    "--train.progress", "false"])
        contrastive.tune_encoder(model, split, config, context)
        moved.append((dict(model.encoder.named_parameters())[key] - before).abs().max().item())
    assert moved[1] > 10 * moved[0] > 0
