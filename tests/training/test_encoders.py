"""model.name auto: which encoder and method the planner picks for given rows, classes and budgets (a fake probe
stands for the measured estimates), and what the plan says of it."""

from __future__ import annotations

import json

import pytest

from bertfit.config import AUTO_MODEL, EMBEDDED_MODEL, load_config
from bertfit.data.labels import LabelMap
from bertfit.data.splits import Split, TextDataset
from bertfit.errors import ConfigError
from bertfit.training import encoders
from bertfit.training.encoders import Candidate, Estimate


def dataset(rows: int, classes: int) -> TextDataset:
    labels = [row % classes for row in range(rows)]
    return TextDataset({"train": Split("train", "rows", [f"text {row}" for row in range(rows)], labels)},
                       LabelMap(tuple(f"label{c}" for c in range(classes))))


def config(*flags: str):
    return load_config(None, ["--data.train", "train.csv", *flags])


class FakeProbe:
    """Minutes of training per (encoder, method), and the candidates it was asked about."""

    def __init__(self, minutes: dict[tuple[str, str], float]):
        self.minutes, self.asked = minutes, []

    def __call__(self, candidate: Candidate) -> Estimate:
        self.asked.append((candidate.encoder, candidate.method))
        return Estimate(60 * self.minutes[candidate.encoder, candidate.method], 100.0)


SPEEDS = {("mpnet-base", "contrastive"): 7, (EMBEDDED_MODEL, "contrastive"): 2, ("mpnet-base", "standard"): 1,
          (EMBEDDED_MODEL, "standard"): 0.3}


def installed(*names: str):
    return lambda name: name in names


def test_few_rows_take_the_largest_installed_encoder_that_fits():
    probe = FakeProbe(SPEEDS)
    choice = encoders.choose(config(), dataset(48, 6), probe, installed("mpnet-base", EMBEDDED_MODEL))
    assert (choice.chosen.encoder, choice.chosen.method) == ("mpnet-base", "contrastive")
    assert choice.budget == 600 and "few labelled rows" in choice.why
    text = "\n".join(choice.lines())
    assert "auto chose mpnet-base, contrastive method, about 7 min" in text
    assert "alternative: minilm-l6 (embedded), contrastive method, about 2 min of training, 100 texts/s (fits)" in text
    assert "bertfit distill RUN --student minilm-l6 or --student static" in text  # 100 texts/s: slow to serve
    chosen = encoders.with_candidate(config(), choice.chosen).model
    assert chosen.name == "mpnet-base"


def test_a_tighter_budget_or_no_mpnet_takes_minilm_and_says_how_to_get_mpnet():
    tight = encoders.choose(config("--train.time_budget", "5m"), dataset(48, 6), FakeProbe(SPEEDS),
                            installed("mpnet-base", EMBEDDED_MODEL))
    assert (tight.chosen.encoder, tight.chosen.method) == (EMBEDDED_MODEL, "contrastive")
    assert "alternative: mpnet-base, contrastive method, about 7 min of training, 100 texts/s (over the budget)" \
        in "\n".join(tight.lines())
    probe = FakeProbe(SPEEDS)
    missing = encoders.choose(config(), dataset(48, 6), probe, installed(EMBEDDED_MODEL))
    assert missing.chosen.encoder == EMBEDDED_MODEL and ("mpnet-base", "contrastive") not in probe.asked
    assert "\n".join(missing.lines()).count("not installed: mpnet-base (110M parameters), expected to score higher "
                                          "with few labels: bertfit models install mpnet-base") == 1
    nothing = encoders.choose(config(), dataset(48, 6), FakeProbe(SPEEDS), installed())
    assert nothing.chosen.encoder == EMBEDDED_MODEL and "no registry encoder" in nothing.why


def test_a_contrastive_stage_beyond_the_budget_falls_back_to_the_standard_method():
    slow = {**SPEEDS, ("mpnet-base", "contrastive"): 90, (EMBEDDED_MODEL, "contrastive"): 20}
    choice = encoders.choose(config(), dataset(360, 4), FakeProbe(slow), installed("mpnet-base", EMBEDDED_MODEL))
    assert (choice.chosen.encoder, choice.chosen.method) == ("mpnet-base", "standard")
    assert "contrastive method would not fit" in choice.why
    assert encoders.with_candidate(config(), choice.chosen).train.method == "standard"
    # an explicit method is kept: only encoders are compared
    kept = encoders.choose(config("--train.method", "contrastive"), dataset(360, 4), FakeProbe(slow),
                           installed("mpnet-base", EMBEDDED_MODEL))
    assert kept.chosen.method == "contrastive" and all(c.method == "contrastive" for c in kept.candidates)


def test_nothing_fits_takes_the_fastest_and_says_so():
    slow = {key: 60.0 * (index + 1) for index, key in enumerate(SPEEDS)}
    choice = encoders.choose(config(), dataset(48, 6), FakeProbe(slow), installed("mpnet-base", EMBEDDED_MODEL))
    fastest = min(choice.candidates, key=lambda c: c.estimate.seconds)
    assert choice.chosen == fastest and "no candidate fits" in choice.why
    note = encoders.over_budget(choice, fastest.estimate.seconds)
    assert "over train.time_budget 10 min" in note and encoders.over_budget(choice, 30.0) is None


def test_many_rows_keep_the_embedded_minilm_without_probing():
    probe = FakeProbe(SPEEDS)
    choice = encoders.choose(config(), dataset(3600, 4), probe, installed("mpnet-base", EMBEDDED_MODEL))
    assert choice.chosen.encoder == EMBEDDED_MODEL and probe.asked == []
    assert "3,600 training rows, 900 a class" in choice.why


def test_the_budget_reads_durations_and_refuses_others():
    assert config().model.name == AUTO_MODEL
    assert config("--train.time_budget", "90s").time_budget_seconds == 90
    assert config("--train.time_budget", "2h").time_budget_seconds == 7200
    assert config("--train.time_budget", "300").time_budget_seconds == 300
    with pytest.raises(ConfigError, match="train.time_budget"):
        config("--train.time_budget", "soon")


def test_train_plan_says_what_auto_chose_and_its_command_starts_that(tmp_path, capsys):
    import shlex

    from bertfit.cli.main import main
    from bertfit.evaluate.card_facts import plan_lines
    from bertfit.training.plan import read_plan
    from conftest import headline_rows, write_csv

    write_csv(tmp_path / "few.csv", headline_rows(0, 40), header=("headline", "body", "topic"))
    flags = ["--data.train", str(tmp_path / "few.csv"), "--data.text_columns", "headline,body",
             "--data.label_column", "topic", "--output_dir", str(tmp_path / "runs"), "--cache_dir", str(tmp_path / "c"),
             "--name", "few", "--train.progress", "false", "--train.tensorboard", "false", "--train.max_steps", "4",
             "--train.onnx_copy", "false", "--train.time_budget", "20m"]
    assert main(["train", "--plan", *flags]) == 0
    out = capsys.readouterr().out
    assert "model: auto chose minilm-l6 (embedded), contrastive method" in out
    assert "not installed: mpnet-base" in out and "override: --model.name NAME" in out
    assert "prediction: about" in out and "texts/s here with PyTorch" in out
    command = next(line for line in out.splitlines() if line.startswith("start it with: ")).removeprefix("start it with: ")
    assert "--model.name embedded" in command
    assert main(shlex.split(command)[1:]) == 0
    assert read_plan(tmp_path / "runs" / "few").config.model.name == EMBEDDED_MODEL
    card = plan_lines(tmp_path / "runs" / "few", "runs/few")
    assert card[0].startswith("- prediction: about") and "`bertfit export runs/few --target auto`" in card[0]


def test_the_card_states_the_choice_and_the_speed_from_the_plan(tmp_path):
    from bertfit.evaluate.card_facts import plan_lines

    choice = encoders.choose(config(), dataset(48, 6), FakeProbe(SPEEDS), installed("mpnet-base", EMBEDDED_MODEL))
    (tmp_path / "plan.json").write_text(json.dumps({"encoder": choice.lines(), "texts_per_second": 123.4}))
    card = plan_lines(tmp_path, "runs/x")
    assert card[0].startswith("- encoder: auto chose mpnet-base, contrastive method") and "123 texts/s" in card[1]
    assert plan_lines(tmp_path / "elsewhere", "runs/x") == []
