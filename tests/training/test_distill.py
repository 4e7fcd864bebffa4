"""Distillation: the loss, a student that learns its teacher's probabilities, resume, bad input; the student is a run."""


import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertfit import artifacts
from bertfit.cli.main import main
from bertfit.config import load_config
from bertfit.errors import BertfitError, ConfigError
from bertfit.infer.engine import InferenceContext, text_logits
from bertfit.infer.predictor import Predictor
from bertfit.model import build_classifier
from bertfit.training.distill import distill_config
from bertfit.training.losses import distillation_loss
from bertfit.training.recipe import train
from conftest import write_csv
from interrupts import stop_at


def test_loss_mixes_the_softened_teacher_with_the_gold_label():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4), torch.randn(3, 4)
    gold = torch.zeros(3, 4)
    gold[0, 2] = gold[1, 0] = 1.0  # the third text has no gold label
    loss = distillation_loss(temperature=2.0, alpha=0.3)(student, torch.cat([teacher, gold], 1))

    kl = torch.nn.functional.kl_div(torch.log_softmax(student / 2, -1), torch.softmax(teacher / 2, -1),
                                    reduction="none").sum(-1) * 4
    cross_entropy = torch.nn.functional.cross_entropy(student[:2], torch.tensor([2, 0]), reduction="none")
    expected = 0.3 * kl[:2].sum() + 0.7 * cross_entropy.sum() + kl[2]  # unlabelled: the teacher alone
    torch.testing.assert_close(loss, expected)
    assert distillation_loss(1.0, 1.0)(teacher, torch.cat([teacher, gold], 1)).item() == pytest.approx(0, abs=1e-6)


@pytest.fixture
def student_flags(tmp_path, no_dropout_model_dir, ag_news_rows) -> list[str]:
    unlabelled = write_csv(tmp_path / "unlabelled.csv", [(text,) for text, _ in ag_news_rows[:40]], header=("text",))
    return ["--output_dir", str(tmp_path / "runs"), "--cache_dir", str(tmp_path / "cache"), "--train.progress", "false",
            "--train.tensorboard", "false", "--data.max_train_rows", "64", "--train.batch_size", "16",
            "--train.epochs", "2", "--train.lr", "2e-3", "--train.checkpoint_every_steps", "3",
            "--distill.unlabelled", str(unlabelled), "--train.keep_checkpoint", "true"]


def _probabilities(model, tokenizer, meta, texts: list[str]) -> np.ndarray:
    logits = text_logits(model, tokenizer, meta, texts, InferenceContext.cpu(tokenizer.pad_token_id, 64))
    return torch.softmax(torch.from_numpy(logits), -1).numpy()


def _last_probabilities(run_dir, texts: list[str]) -> np.ndarray:
    """With the run's last weights (its best model is picked by gold-label validation F1, not by the teacher)."""
    loaded = artifacts.load_model(run_dir)
    loaded.model.load_state_dict(load_file(run_dir / "checkpoint" / "model.safetensors"))
    return _probabilities(loaded.model, loaded.tokenizer, loaded.meta, texts)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)))


def test_the_student_learns_the_teachers_probabilities(tiny_exported_run, no_dropout_model_dir, student_flags, ag_news_rows,
                                                       tmp_path):
    config = distill_config(tiny_exported_run, str(no_dropout_model_dir), [
        *student_flags, "--name", "student", "--distill.alpha", "1", "--distill.temperature", "1",
        "--train.epochs", "4"])
    result = train(config)

    texts = [text for text, _ in ag_news_rows[:40]]  # the unlabelled texts: only the teacher says what they are
    teacher = artifacts.load_model(tiny_exported_run)
    untrained = build_classifier(config.model, len(teacher.meta.labels), config.train.seed)  # where the student began
    expected = _probabilities(teacher.model, teacher.tokenizer, teacher.meta, texts)
    before = _kl(expected, _probabilities(untrained, teacher.tokenizer, teacher.meta, texts))
    assert _kl(expected, _last_probabilities(result.run_dir, texts)) < 0.5 * before
    results = artifacts.read_results(result.run_dir)
    # The labelled rows read (data.max_train_rows, validation held out of them) plus every unlabelled text.
    assert results["rows"]["train"] == 64 - results["rows"]["validation"] + 40 and results["rows"]["validation"] > 0
    assert len(list((tmp_path / "cache" / "teacher").glob("*.npy"))) == 1  # the teacher ran once, its logits kept

    # An ordinary run: it reloads, predicts and exports like any other.
    assert artifacts.read_model_meta(result.run_dir).base_model == str(no_dropout_model_dir)
    assert Predictor(result.run_dir, backend="torch").predict(["Stocks rallied"])[0].label in teacher.meta.labels
    assert artifacts.read_run_config(result.run_dir).distill.teacher == str(tiny_exported_run)


def test_an_interrupted_student_resumes_to_the_same_weights(tiny_exported_run, no_dropout_model_dir, student_flags,
                                                            monkeypatch):
    def config(name: str):
        return distill_config(tiny_exported_run, str(no_dropout_model_dir), [*student_flags, "--name", name])

    straight = train(config("straight"))
    with monkeypatch.context() as patch:
        stop_at(patch, 5)
        assert train(config("stopped")).interrupted
    resumed = train(resume=straight.run_dir.parent / "stopped")

    assert resumed.steps == straight.steps and not resumed.interrupted
    expected = load_file(straight.run_dir / "checkpoint" / "model.safetensors")
    actual = load_file(resumed.run_dir / "checkpoint" / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)


def test_bad_input_is_one_line(tiny_exported_run, tmp_path, capsys):
    assert main(["distill", str(tmp_path), "--student", "minilm-l3"]) == 2
    assert "is not a bertfit run directory" in capsys.readouterr().err
    assert main(["distill", str(tiny_exported_run), "--student", "minilm-l6", "--unlabelled", str(tmp_path / "no.csv"),
                 "--output_dir", str(tmp_path / "runs"), "--train.progress", "false"]) == 2
    assert capsys.readouterr().err.strip().endswith("no.csv not found")
    with pytest.raises(ConfigError, match="distill.teacher: distillation is for single-label models"):
        distill_config(tiny_exported_run, "minilm-l6", ["--data.multi_label", "true"])
    with pytest.raises(ConfigError, match="distill.unlabelled: needs distill.teacher"):
        load_config(None, ["--distill.unlabelled", "x.csv"])
    empty = write_csv(tmp_path / "empty.csv", [("a text",), ("",)], header=("text",))
    config = distill_config(tiny_exported_run, "minilm-l6", ["--distill.unlabelled", str(empty)])
    from bertfit.training.distill import read_unlabelled
    with pytest.raises(BertfitError, match="empty.csv row 2: empty text"):
        read_unlabelled(config.distill.unlabelled, config.data)
