"""The run plan: decided before the first step, with no unset field, logged, saved, read on resume, and honest about cost."""

import dataclasses
import json
import shlex

import numpy as np
import pytest
import torch

from bertfit.cli.main import main
from bertfit.config import DataConfig, load_config
from bertfit.data.batching import TokenizedSplit
from bertfit.data.splits import load_dataset
from bertfit.model import build_classifier
from bertfit.training.contrastive import draw_groups
from bertfit.training.defaults import DataFacts
from bertfit.training.plan import PLAN_FILE, SCORING, Stage, TokenCost, make_plan, measure_cost, read_plan
from bertfit.training.recipe import plan_run, train
from conftest import keyword_rows, tiny_flags, write_csv

MINILM = 22_700_000


def _split(lengths: list[int], labels: list[int], windows: list[int] | None = None) -> TokenizedSplit:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.full(int(offsets[-1]), 1000, dtype=np.int32)
    return TokenizedSplit(ids, offsets, np.asarray(labels), None if windows is None else np.asarray(windows))


def _unset(value, path="") -> list[str]:
    """Fields of a config (nested dataclasses) that are still None or auto."""
    if dataclasses.is_dataclass(value):
        return [p for f in dataclasses.fields(value) for p in _unset(getattr(value, f.name), f"{path}.{f.name}")]
    return [path] if value == "auto" and path.endswith((".method", ".keep")) else []


@pytest.mark.parametrize("rows, classes, bound, expected", [(1000, 2, 100, (90, 10)), (11_314, 20, 3000, (2700, 300))])
def test_max_train_rows_bounds_the_rows_read_and_validation_comes_out_of_them(tmp_path, rows, classes, bound, expected):
    lines = [(f"text number {i} about topic {i % classes}", f"topic-{i % classes}") for i in range(rows)]
    data = DataConfig(train=str(write_csv(tmp_path / "train.csv", lines)), max_train_rows=bound)
    dataset = load_dataset(data, seed=0)
    assert (len(dataset.splits["train"]), len(dataset.splits["validation"])) == expected
    texts = set(dataset.splits["train"].texts) | set(dataset.splits["validation"].texts)
    assert len(texts) == bound  # the validation rows are among the rows read, none of them also trains


def test_a_run_is_planned_logged_saved_and_resumed_with_its_plan(tiny_model_dir, ag_news_csv, tmp_path, caplog):
    flags = tiny_flags(tiny_model_dir, tmp_path) + ["--data.train", str(ag_news_csv), "--name", "planned"]
    flags.remove("--train.epochs"), flags.remove("1")  # leave epochs to the planner
    with caplog.at_level("INFO"):
        result = train(load_config(None, flags))
    saved = read_plan(result.run_dir)
    assert saved == result.plan and json.loads((result.run_dir / PLAN_FILE).read_text())["seconds"] > 0
    assert saved.config.train.epochs >= 3 and saved.config.train.method == "standard" and not _unset(saved.config)
    assert [stage.name for stage in saved.stages] == ["fine-tuning", SCORING]
    assert saved.stages[0].steps == result.steps and saved.texts["train"] + saved.texts["validation"] == 300
    assert any(r.message.startswith("plan: standard method") for r in caplog.records)
    plan = plan_run(load_config(None, flags))  # the same config planned again, without training
    assert plan.config.train == saved.config.train and plan.texts == saved.texts


def test_the_plan_flag_writes_nothing_and_prints_a_command_that_starts_the_run(tiny_model_dir, ag_news_csv, tmp_path,
                                                                               capsys):
    flags = tiny_flags(tiny_model_dir, tmp_path) + ["--data.train", str(ag_news_csv), "--name", "dry"]
    assert main(["train", "--plan", *flags]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning" in out and "estimate:" in out and not (tmp_path / "runs" / "dry").exists()
    command = next(line for line in out.splitlines() if line.startswith("start it with: ")).removeprefix("start it with: ")
    assert main(shlex.split(command)[1:]) == 0
    assert read_plan(tmp_path / "runs" / "dry") is not None


def _facts(rows: int, classes: int) -> DataFacts:
    return DataFacts(rows, rows, classes, MINILM, 0, (rows // classes,) * classes)


def test_a_contrastive_plan_far_costlier_than_standard_says_so_and_names_the_way_out():
    """400 texts at 100 a class: contrastive is chosen and its encoder stage costs far more than standard training."""
    split = _split([40] * 396, [i % 4 for i in range(396)])
    plan = make_plan(load_config(None, ["--train.epochs", "1"]), _facts(396, 4), {"train": split},
                     TokenCost(train=1e-4, score=3e-5), 0.0)
    assert plan.config.train.method == "contrastive" and len(plan.stages) == 3
    assert plan.seconds > 10 * plan.standard_seconds
    assert any("x the standard method's" in n and "train.method standard" in n for n in plan.notes)
    assert any(n.startswith("train.epochs 1 sets the head stage's passes") for n in plan.notes)


def test_max_steps_bounds_every_stage_and_an_affordable_plan_has_no_notes():
    split = _split([40] * 80, [i % 4 for i in range(80)])
    plan = make_plan(load_config(None, ["--train.max_steps", "5"]), _facts(80, 4), {"train": split},
                     TokenCost(1e-4, 3e-5), 0.0)
    assert plan.config.train.contrastive_steps == 5 and [s.steps for s in plan.stages] == [5, 5, 0]
    standard = make_plan(load_config(None, ["--train.method", "standard"]), _facts(80, 4), {"train": split},
                         TokenCost(1e-4, 3e-5), 0.1)
    assert standard.notes == () and standard.seconds == pytest.approx(standard.standard_seconds, rel=0.5)


def test_a_step_costs_its_padded_batch_and_training_leaves_scoring_out():
    """Each label's one long text pads every group it joins: the stage costs the tokens its steps really read."""
    lengths = [120 if i < 2 else 8 for i in range(40)]  # row 0 (label 0) and row 1 (label 1) are long
    split = _split(lengths, [i % 2 for i in range(40)])
    cost = TokenCost(train=1e-4, score=3e-5)
    config = load_config(None, ["--train.method", "contrastive", "--train.contrastive_steps", "20"])
    plan = make_plan(config, _facts(40, 2), {"train": split, "test": _split([8] * 10, [0] * 10)}, cost, 0.0)
    groups = draw_groups(split.labels, 20, plan.config.train.seed)
    padded = sum(len(g) * (120 if min(g) < 2 else 8) for g in groups)
    assert any(min(g) < 2 for g in groups) and padded > sum(np.asarray(lengths)[g].sum() for g in groups)
    assert plan.stages[0].seconds == pytest.approx(padded * cost.train)
    assert plan.stages[-1] == Stage(SCORING, 0, 80 * cost.score)
    assert plan.training_seconds == pytest.approx(plan.seconds - 80 * cost.score)


def test_a_standard_plan_and_the_standard_estimate_it_is_compared_with_agree():
    """Without windows, a standard plan is the very run it is compared with: the two estimates agree to the token."""
    lengths = [8 + (i * 37) % 120 for i in range(200)]  # lengths that vary, so padding counts
    plan = make_plan(load_config(None, ["--train.method", "standard"]), _facts(200, 2),
                     {"train": _split(lengths, [i % 2 for i in range(200)])}, TokenCost(1e-4, 3e-5), 0.1)
    assert plan.stages[0].seconds > plan.config.train.epochs * sum(lengths) * 1e-4  # padded beyond the texts' own tokens
    assert plan.seconds == pytest.approx(plan.standard_seconds, rel=1e-9)


def test_windows_that_multiply_the_work_are_named_with_the_settings_that_bound_them():
    texts = 50  # each text read in 6 windows of 64 tokens: 6x the tokens of one 64-token cut
    split = _split([64] * texts * 6, [i // 6 % 2 for i in range(texts * 6)], list(range(0, texts * 6 + 1, 6)))
    config = load_config(None, ["--train.method", "standard", "--model.max_length", "64", "--model.window_stride", "31"])
    plan = make_plan(config, DataFacts(texts * 6, texts, 2, MINILM), {"train": split}, TokenCost(1e-4, 3e-5), 0.1)
    assert plan.windows["train"] == 300 and plan.texts["train"] == texts
    assert any("windows multiply the training work 6.0x" in n and "model.max_windows" in n for n in plan.notes)
    assert plan.seconds == pytest.approx(6 * plan.standard_seconds, rel=0.01)


def test_the_probe_leaves_the_model_as_it_was(tiny_model_dir):
    from bertfit.infer.engine import InferenceContext
    from bertfit.model import load_tokenizer

    model = build_classifier(load_config(None, ["--model.name", str(tiny_model_dir)]).model, 3, seed=0)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = [text for text, _ in keyword_rows(12, seed=0)]
    ids = [tokenizer(t, truncation=True, max_length=64)["input_ids"] for t in texts]
    split = _split([len(i) for i in ids], [0] * len(ids))
    split = TokenizedSplit(np.concatenate(ids).astype(np.int32), split.offsets, split.labels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    cost = measure_cost(model, split, InferenceContext.create(tokenizer.pad_token_id, 8, "cpu"))
    assert cost.train > cost.score > 0 and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_resumed_run_goes_on_with_the_plan_it_started_with(tiny_model_dir, ag_news_csv, tmp_path, monkeypatch, caplog):
    from interrupts import stop_at

    flags = tiny_flags(tiny_model_dir, tmp_path) + ["--data.train", str(ag_news_csv), "--name", "stopped"]
    with monkeypatch.context() as patch:
        stop_at(patch, 3)
        stopped = train(load_config(None, flags))
    assert stopped.interrupted
    saved = json.loads((stopped.run_dir / PLAN_FILE).read_text())
    saved["notes"] = ["the note this run was started with"]
    (stopped.run_dir / PLAN_FILE).write_text(json.dumps(saved))
    with caplog.at_level("INFO"):
        resumed = train(resume=stopped.run_dir)
    assert not resumed.interrupted and resumed.plan.notes == ("the note this run was started with",)
    assert any(r.message.startswith("resuming plan: standard method") for r in caplog.records)
