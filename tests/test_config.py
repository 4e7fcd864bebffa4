from pathlib import Path

import pytest

from bertfit.config import build_config, load_config, replace
from bertfit.errors import BertfitError, ConfigError


def test_defaults_and_dotted_overrides_are_typed():
    config = load_config(None, ["--train.lr", "3e-5", "--data.text_columns", "title,description",
                                "--model.freeze=2", "--train.tensorboard", "false", "--data.max_train_rows", "100"])
    assert config.train.lr == pytest.approx(3e-5)
    assert config.data.text_columns == ("title", "description")
    assert config.model.freeze == "2"
    assert config.train.tensorboard is False
    assert config.data.max_train_rows == 100
    assert config.train.epochs is None  # unset: chosen from the data when training starts (training.defaults)


def test_yaml_file_then_flags_win(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("name: x\ntrain:\n  lr: 1.0e-4\n  epochs: 5\nmodel:\n  pooling: cls\n")
    config = load_config(path, ["--train.epochs", "2"])
    assert (config.name, config.train.lr, config.train.epochs, config.model.pooling) == ("x", 1e-4, 2, "cls")


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["--train.lrr", "1", "--train.epochs", "two", "--train.lr", "-1",
                           "--model.pooling", "max", "--data.validation_fraction", "1.5", "--bogus.x", "1"])
    problems = caught.value.problems
    assert len(problems) == 6
    text = str(caught.value)
    assert "train.lrr: unknown field (did you mean train.lr?)" in text
    assert "train.epochs: expected a whole number, got 'two'" in text
    assert "train.lr: must be between 0 and 1" in text
    assert "model.pooling: must be one of cls, mean" in text
    assert "data.validation_fraction" in text
    assert "bogus: unknown field" in text


def test_bad_yaml_and_missing_file(tmp_path: Path):
    with pytest.raises(BertfitError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(BertfitError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="missing value"):
        load_config(None, ["--train.lr"])


def test_replace_validates():
    config = build_config({})
    assert replace(config, train={"lr": 1e-3}).train.lr == 1e-3
    with pytest.raises(ConfigError):
        replace(config, train={"lr": 7})


def test_combination_rules_fail_before_any_file_is_read(tmp_path):
    """Cross-field rules live in the config: a wrong pair fails at load_config, even with missing data files."""
    with pytest.raises(ConfigError) as error:
        load_config(None, ["--data.train", str(tmp_path / "missing.csv"), "--model.freeze", "embeddings",
                           "--lora.r", "8", "--data.streaming", "true"])
    message = str(error.value)
    assert "model.freeze: LoRA" in message and "data.label_names: required with data.streaming" in message
    assert "not found" not in message


def test_an_unknown_field_names_the_closest_ones():
    with pytest.raises(ConfigError, match=r"did you mean .*train\.contrastive_steps\?"):  # a flag is checked as written
        load_config(None, ["--train.contrastive_pairs", "320"])


def test_a_bare_file_argument_is_answered_with_the_field_that_takes_it(tiny_model_dir, ag_news_csv, tmp_path, capsys):
    """`bertfit train data.csv` is a new user's first guess: the error names --data.train, and that command trains."""
    from bertfit.cli.main import main
    from conftest import tiny_flags

    assert main(["train", str(ag_news_csv), *tiny_flags(tiny_model_dir, tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"--data.train {ag_news_csv}" in error and "overrides look like" not in error
    with pytest.raises(ConfigError, match="--config run.yaml"):
        load_config(None, ["run.yaml"])
    with pytest.raises(ConfigError, match="overrides look like --train.lr"):
        load_config(None, ["3e-5"])
    assert main(["train", "--data.train", str(ag_news_csv), *tiny_flags(tiny_model_dir, tmp_path)]) == 0
