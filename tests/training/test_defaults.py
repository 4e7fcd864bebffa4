"""Defaults that fit the data: unset settings chosen from rows, classes and the encoder, logged, saved, overridable."""

import itertools
import logging
import math

import pytest
import yaml

from bertfit.config import load_config
from bertfit.data.splits import load_dataset, validation_share
from bertfit.errors import ConfigError
from bertfit.training import defaults
from bertfit.training.defaults import DataFacts, fill_defaults
from bertfit.training.recipe import train
from conftest import write_csv

MINILM = 22_700_000


def _steps(config, rows: int) -> int:
    train = config.train
    return math.ceil(math.ceil(rows / train.batch_size) / train.grad_accum_steps) * train.epochs


@pytest.mark.parametrize("rows, classes", [(40, 4), (128, 2), (230, 4), (384, 6), (600, 2), (5_000, 6), (120_000, 4)])
def test_unset_settings_follow_the_data(rows, classes):
    config = fill_defaults(load_config(None, []), DataFacts(rows, rows, classes, MINILM), validation_share(rows, classes))
    train = config.train
    assert 4 <= train.batch_size <= max(4, rows // 8) and train.batch_size <= 32
    assert _steps(config, rows) >= 150 or train.epochs == defaults.MAX_EPOCHS
    assert train.epochs >= 3 and (train.epochs == 3 or _steps(config, rows) < 150 + math.ceil(rows / train.batch_size))
    assert 0.06 <= train.warmup_ratio <= 0.1
    assert 0.1 <= config.data.validation_fraction <= 0.2
    few = rows / classes < defaults.CONTRASTIVE_BELOW_ROWS_PER_CLASS and rows < defaults.CONTRASTIVE_BELOW_ROWS
    assert train.method == ("contrastive" if few else "standard")
    assert train.lr == (defaults.HEAD_LR if few else pytest.approx(1e-4 * min(1, math.sqrt(train.batch_size / 16)), rel=0.05))
    if rows >= 100_000:  # large data keeps the long-standing defaults: 3 epochs of 32
        assert (train.epochs, train.batch_size, train.warmup_ratio) == (3, 32, 0.06)


def test_larger_encoders_get_smaller_rates():
    rates = [fill_defaults(load_config(None, []), DataFacts(10_000, 10_000, 2, size), 0.1).train.lr
             for size in (22e6, 110e6, 335e6)]
    assert rates == sorted(rates, reverse=True) and rates[0] == 1e-4 and rates[-1] == 2e-5


def test_a_head_trained_alone_on_a_frozen_encoder_gets_the_head_rate():
    """With model.freeze encoder only a linear head learns, on fixed vectors: an encoder's fine-tuning rate (5e-5
    for MPNet) left it near chance (docs/decisions.md); freezing some layers still tunes the rest at that rate."""
    facts = DataFacts(400, 400, 4, 109_000_000)
    frozen = fill_defaults(load_config(None, ["--model.freeze", "encoder", "--train.method", "standard"]), facts, 0.1)
    layers = fill_defaults(load_config(None, ["--model.freeze", "4", "--train.method", "standard"]), facts, 0.1)
    tuned = fill_defaults(load_config(None, ["--train.method", "standard"]), facts, 0.1)
    assert frozen.train.lr == defaults.HEAD_LR and layers.train.lr == tuned.train.lr == 5e-5


def test_explicit_settings_win():
    explicit = load_config(None, ["--train.epochs", "2", "--train.batch_size", "64", "--train.lr", "3e-5",
                                  "--train.warmup_ratio", "0", "--train.method", "standard",
                                  "--data.validation_fraction", "0.3"])
    config = fill_defaults(explicit, DataFacts(64, 64, 4, MINILM), 0.3)
    assert (config.train.epochs, config.train.batch_size, config.train.lr, config.train.warmup_ratio) == (2, 64, 3e-5, 0)
    assert (config.train.method, config.data.validation_fraction, config.model.freeze) == ("standard", 0.3, "none")


def _setfit_pairs(label_rows: tuple[int, ...]) -> int:
    """The pairs SetFit 1.2.0's default (oversampling) draws, counted one pair at a time: as many of each kind (one
    label, two labels) as the commoner kind has (SetFit also pairs a text with itself; a group never does)."""
    labels = [label for label, rows in enumerate(label_rows) for _ in range(rows)]
    same = sum(a == b for a, b in itertools.combinations(labels, 2))
    return 2 * max(same, math.comb(len(labels), 2) - same)


@pytest.mark.parametrize("label_rows", [(8, 8), (12,) * 4, (16,) * 6, (64,) * 6, (90, 10), (40, 5, 5)])
def test_the_contrastive_budget_grows_with_the_pairs_the_rows_offer(label_rows):
    """SetFit's count of pairs at 28 a step (every pair of a step's 8 texts), but at least 2.5 steps a row."""
    steps, pairs, rows = defaults.contrastive_steps(label_rows), _setfit_pairs(label_rows), sum(label_rows)
    assert steps * defaults.PAIRS_PER_STEP >= pairs and steps >= 2.5 * rows
    assert (steps - 1) * defaults.PAIRS_PER_STEP < pairs or steps - 1 < 2.5 * rows  # no more than that
    facts = DataFacts(rows, rows, len(label_rows), MINILM, 0, label_rows)
    config = fill_defaults(load_config(None, []), facts, None)
    assert config.train.method == "contrastive" and config.train.contrastive_steps == steps
    assert fill_defaults(load_config(None, ["--train.contrastive_steps", "30"]), facts, None).train.contrastive_steps == 30


def test_the_encoder_stage_rate_follows_the_encoders_size():
    """SetFit's 2e-5, twice it below 40M parameters (docs/decisions.md); a rate set wins; standard runs have
    no such stage and leave it unset."""
    def rate(size: float, flags: list[str]) -> float | None:
        return fill_defaults(load_config(None, flags), DataFacts(128, 128, 2, int(size), 0, (64, 64)), None).train.contrastive_lr

    assert [rate(size, []) for size in (22.7e6, 109e6, 335e6)] == [4e-5, 2e-5, 2e-5]
    assert rate(22.7e6, ["--train.contrastive_lr", "1e-5"]) == 1e-5
    assert rate(22.7e6, ["--train.method", "standard"]) is None


def test_the_contrastive_budget_stays_bounded_where_the_method_is_chosen():
    """Below CONTRASTIVE_BELOW_ROWS rows the quadratic count of pairs stays under ~10,000 steps."""
    largest = defaults.CONTRASTIVE_BELOW_ROWS - 1
    classes = math.ceil(largest / (defaults.CONTRASTIVE_BELOW_ROWS_PER_CLASS - 1))
    worst = defaults.contrastive_steps((largest // classes,) * classes)
    assert worst < largest ** 2 / defaults.PAIRS_PER_STEP < 10_000


def test_the_method_help_states_the_thresholds_the_rule_uses():
    """`bertfit train --help` tells when auto picks contrastive: the numbers it prints are the rule's."""
    from dataclasses import fields

    from bertfit.config import TrainConfig

    text = next(f.metadata["help"] for f in fields(TrainConfig) if f.name == "method")
    assert f"below {defaults.CONTRASTIVE_BELOW_ROWS_PER_CLASS} train rows a class" in text
    assert f"and {defaults.CONTRASTIVE_BELOW_ROWS} in all" in text


@pytest.mark.parametrize("flags, method, validation_rows, kept", [
    ([], "standard", 99, "last"), ([], "standard", 100, "best"), ([], "contrastive", 500, "last"),
    (["--train.early_stopping_patience", "2"], "standard", 12, "best"),
    (["--train.keep", "best"], "standard", 12, "best"), (["--train.keep", "last"], "standard", 5_000, "last")])
def test_the_last_weights_are_kept_where_the_best_evaluation_is_noise(flags, method, validation_rows, kept):
    config = load_config(None, ["--train.method", method, *flags])
    assert fill_defaults(config, DataFacts(1_000, 1_000, 2, MINILM, validation_rows), 0.1).train.keep == kept


def test_keeping_the_last_weights_and_stopping_early_are_refused_together():
    with pytest.raises(ConfigError, match="train.early_stopping_patience: stops when train.metric stops improving"):
        load_config(None, ["--train.keep", "last", "--train.early_stopping_patience", "2"])
    load_config(None, ["--train.keep", "best", "--train.early_stopping_patience", "2"])


def test_the_demo_config_is_not_changed(request):
    """configs/demo.yaml sets its own values; what it leaves unset comes out as the values it was measured with."""
    from bertfit.model import load_tokenizer

    demo = load_config(request.config.rootpath / "configs" / "demo.yaml")
    dataset = load_dataset(demo.data, demo.train.seed)
    config = defaults.choose_windows(demo, dataset.splits["train"].texts, load_tokenizer(demo.model.name))
    config = fill_defaults(config, DataFacts(4_000, 4_000, 4, MINILM), dataset.validation_fraction)
    assert (config.train.epochs, config.train.batch_size, config.train.lr, config.train.warmup_ratio) == (2, 32, 1e-4, 0.06)
    assert (config.train.method, config.model.window_stride, config.data.validation_fraction) == ("standard", 0, 0.1)


def test_multi_label_data_never_goes_contrastive():
    config = load_config(None, ["--data.multi_label", "true"])
    assert fill_defaults(config, DataFacts(40, 40, 4, MINILM), 0.2).train.method == "standard"
    with pytest.raises(ConfigError, match="data.multi_label: not supported with train.method contrastive"):
        load_config(None, ["--data.multi_label", "true", "--train.method", "contrastive"])


def test_validation_share_keeps_rows_for_every_class(ag_news_csv):
    assert validation_share(100_000, 4) == 0.1 and validation_share(10, 6) == 0.2
    dataset = load_dataset(load_config(None, ["--data.train", str(ag_news_csv)]).data, seed=1)
    assert dataset.validation_fraction == validation_share(300, 4)
    assert len(set(dataset.splits["validation"].labels)) == 4


def test_chosen_settings_are_logged_saved_and_reused(tiny_model_dir, ag_news_csv, tmp_path, caplog):
    """A run with nothing set: the chosen values are in the log and in config.yaml, which a rerun reproduces."""
    flags = ["--model.name", str(tiny_model_dir), "--model.max_length", "64", "--output_dir", str(tmp_path / "runs"),
             "--cache_dir", str(tmp_path / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
             "--data.train", str(ag_news_csv), "--train.method", "standard", "--train.epochs", "1"]
    with caplog.at_level(logging.INFO, logger="bertfit.training.defaults"):
        result = train(load_config(None, flags + ["--name", "auto"]))
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    # 300 rows, 4 classes: 10% held out (30 rows), batch 32 (270 / 8 = 33 rows), 1 epoch as set (9 steps).
    assert saved["data"]["validation_fraction"] == 0.1 and saved["train"]["batch_size"] == 32
    assert saved["train"]["epochs"] == 1 and result.steps == 9
    assert saved["train"]["lr"] == 1e-4 and saved["train"]["warmup_ratio"] == 0.1
    assert saved["train"]["keep"] == "last" and result.best_step == result.steps  # 30 validation rows: < 100
    assert "train.batch_size 32, train.lr 0.0001, train.warmup_ratio 0.1" in caplog.text
    assert "train.epochs" not in caplog.text  # set by the user: not chosen
    again = train(load_config(tmp_path / "runs" / "auto" / "config.yaml", ["--name", "again"]))
    assert again.validation == result.validation


def test_long_texts_are_read_whole_in_windows_unless_set_otherwise(tiny_model_dir, caplog):
    from bertfit.model import load_tokenizer

    tokenizer, config = load_tokenizer(str(tiny_model_dir)), load_config(None, ["--model.max_length", "32"])
    long_texts, short_texts = ["word " * 60] * 6 + ["short one"] * 4, ["word " * 60] * 4 + ["short one"] * 6
    with caplog.at_level(logging.INFO, logger="bertfit.training.defaults"):
        assert defaults.choose_windows(config, long_texts, tokenizer).model.window_stride == 15
    assert "60% of training texts exceed model.max_length 32" in caplog.text and "windows a text" in caplog.text
    assert defaults.choose_windows(config, short_texts, tokenizer).model.window_stride == 0
    head_tail = load_config(None, ["--model.max_length", "32", "--model.keep_head", "0.25"])
    assert defaults.choose_windows(head_tail, long_texts, tokenizer).model.window_stride == 0


def test_a_windowed_few_shot_run_counts_its_pairs_on_texts_not_windows(tiny_model_dir, ag_news_rows, tmp_path, caplog):
    """A long text read in windows is one labelled text: the encoder stage's steps follow the pairs of texts, or the
    windows (3 a text here) would multiply its cost by their square and break the bound CONTRASTIVE_BELOW_ROWS keeps."""
    firsts = {}
    for text, label in ag_news_rows:
        firsts.setdefault(label, []).append((text, label))
    write_csv(tmp_path / "train.csv", [row for rows in firsts.values() for row in rows[:6]])  # 6 texts of each of 4
    flags = ["--model.name", str(tiny_model_dir), "--output_dir", str(tmp_path / "runs"), "--name", "windows",
             "--data.train", str(tmp_path / "train.csv"), "--train.progress", "false", "--train.tensorboard", "false",
             "--model.max_length", "24", "--model.window_stride", "8", "--model.max_windows", "3"]
    with caplog.at_level(logging.INFO, logger="bertfit.training"):
        result = train(load_config(None, flags))
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["train"]["method"] == "contrastive" and "train / 0 validation windows" in caplog.text
    windows = int(caplog.text.split(" train / 0 validation windows")[0].rsplit(" ", 1)[-1])
    assert windows > 2 * 24  # most of these texts make 3 windows
    assert saved["train"]["contrastive_steps"] == defaults.contrastive_steps((6, 6, 6, 6)) < \
        defaults.contrastive_steps((windows // 4,) * 4)


def test_a_few_shot_run_holds_out_nothing_unless_told(ag_news_csv, tmp_path):
    """About 50 rows a class (contrastive) split off their default share; every row trains unless something else was set."""
    def held_out(*flags: str) -> bool:
        config = load_config(None, ["--data.train", str(ag_news_csv), "--data.max_train_rows", "150", *flags])
        return defaults.holds_out_nothing(config, load_dataset(config.data, config.train.seed))

    assert held_out()
    assert not held_out("--train.method", "standard")  # the standard method keeps choosing its best checkpoint
    assert not held_out("--data.validation_fraction", "0.2")
    assert not held_out("--data.validation", str(ag_news_csv))
    every_row = load_dataset(load_config(None, ["--data.train", str(ag_news_csv), "--data.validation_fraction", "0"]).data, 0)
    assert "validation" not in every_row.splits and len(every_row.splits["train"]) == 300
    assert every_row.validation_fraction == 0


@pytest.mark.parametrize("flag, value", [("--train.early_stopping_patience", "2"), ("--data.multi_label", "true"),
                                         ("--train.stack", "always")])
def test_no_validation_rows_refuses_what_needs_them(flag, value):
    with pytest.raises(ConfigError, match=f"{flag.removeprefix('--')}: needs validation rows"):
        load_config(None, ["--data.validation_fraction", "0", flag, value])
    load_config(None, ["--data.validation_fraction", "0.1", flag, value])  # held-out rows: accepted
