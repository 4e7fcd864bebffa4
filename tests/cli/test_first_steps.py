"""What a new user meets first: inspect on a header-less file, config's choices, tokenize, env's precision advice,
the overfitting warning at the end of train, and error texts cut only between words."""

from __future__ import annotations

import pytest

from bertfit.artifacts import read_metrics
from bertfit.cli.main import main
from bertfit.data.presets import data_dir
from bertfit.errors import BertfitError, brief
from bertfit.metrics import overfitting_warning
from conftest import write_csv

SENTIMENT140 = data_dir() / "sentiment140" / "testdata.manual.2009.06.14.csv"  # no header: polarity,text


def test_inspect_reads_a_header_less_file_and_its_error_names_the_flags_that_fix_it(tiny_model_dir, capsys):
    assert main(["inspect", "--data", str(SENTIMENT140), "--model", str(tiny_model_dir)]) == 2
    error = capsys.readouterr().err
    assert "set --no-header and name columns by number, e.g. --text-column 1 --label-column 0" in error
    assert "data.header" not in error and "data.text_columns" not in error
    assert main(["inspect", "--data", str(SENTIMENT140), "--model", str(tiny_model_dir), "--no-header",
                 "--text-column", "1", "--label-column", "0"]) == 0
    assert "train: 498 rows" in capsys.readouterr().out


def test_config_lists_the_allowed_values_of_choice_fields(capsys):
    assert main(["config"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "[choices: auto, fp32, bf16, fp16]" in lines["--train.precision"]
    assert "[choices: tensorboard, mlflow, wandb]" in lines["--train.report_to"]
    assert "choices" not in lines["--train.lr"]


def test_tokenize_shows_tokens_ids_mask_and_what_max_length_cuts(tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    text = "Stocks rallied on Friday after the central bank held interest rates steady"
    assert main(["tokenize", str(tiny_model_dir), text, "--max-length", "8"]) == 0
    out = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    whole = AutoTokenizer.from_pretrained(tiny_model_dir)(text)["input_ids"]
    ids = [int(i) for i in out["ids"].split()]
    assert ids == [*whole[:7], whole[-1]]  # [CLS], the first 6 text tokens, [SEP]
    assert out["tokens"].split()[:2] == ["[CLS]", "stocks"] and out["tokens"].split()[-1] == "[SEP]"
    assert out["attention_mask"].split()[:8] == ["1"] * 8
    assert f"{len(whole)} tokens with special tokens, max_length 8, 8 read in 1 row(s); {len(whole) - 8} tokens cut" \
        in out["length"]


@pytest.mark.parametrize("flags, speedup, precision, advice", [
    ("", 0.4, "fp32", "fastest choice here"),
    ("avx512_bf16", 1.8, "fp32", "has avx512_bf16 but computes bf16 only 1.8x as fast as fp32 on one core"),
    ("avx512_bf16 amx_bf16", 7.9, "bf16", "bf16 autocast, which this CPU (amx) computes 7.9x as fast as fp32"),
])
def test_env_states_the_training_precision_the_cpu_gets(monkeypatch, capsys, flags, speedup, precision, advice):
    from bertfit.runtime import cpu, device, env

    monkeypatch.setattr(env.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cpu, "_read", lambda path: f"flags\t: fpu avx2 {flags}\n")
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: speedup)
    monkeypatch.setattr(env, "cpu_bf16_speedup", lambda: speedup)
    assert main(["env", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("no GPU") and advice in lines[-1], lines[-1]
    assert ["precision", precision] in [line.split() for line in lines]


def test_train_ends_with_the_overfitting_warning_evaluate_gives(tiny_overrides, tmp_path, ag_news_rows, capsys):
    write_csv(tmp_path / "train.csv", ag_news_rows[:48])
    assert main(["train", *tiny_overrides, "--data.train", str(tmp_path / "train.csv"), "--name", "overfit",
                 "--train.epochs", "3", "--train.batch_size", "8", "--train.lr", "1e-2", "--train.eval_every_steps", "2",
                 "--data.validation_fraction", "0.25"]) == 0
    warning = overfitting_warning(read_metrics(tmp_path / "runs" / "overfit"))
    assert warning is not None  # this seeded run overfits
    assert f"warning: {warning}" in capsys.readouterr().out


def test_error_texts_are_shortened_between_words():
    long = "Error(s) in loading state_dict for BertModel:\n\tsize mismatch for embeddings.word_embeddings.weight: " * 8
    short = brief(long, 120)
    assert short.endswith(" ...") and len(short) <= 124 and "\n" not in short
    assert short.removesuffix(" ...").split() == " ".join(long.split()).split()[:len(short.split()) - 1]
    assert brief("short message") == "short message"


def test_init_from_a_different_architecture_reports_whole_words(tiny_model_dir):
    import torch

    from bertfit.config import ModelConfig
    from bertfit.model import build_classifier, load_initial_weights

    model = build_classifier(ModelConfig(name=str(tiny_model_dir)), 2, seed=0)
    state = {f"encoder.{k}": torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim else v
             for k, v in model.encoder.state_dict().items()}
    with pytest.raises(BertfitError) as error:
        load_initial_weights(model, state, [0, 1])
    detail = str(error.value).split("architecture (", 1)[1].rsplit(");", 1)[0]
    assert detail.endswith(" ...")  # PyTorch's message is longer than an error line
    torch_words = set(_torch_error(model, state).split())
    assert all(word in torch_words for word in detail.removesuffix(" ...").split()), detail  # none cut in two


def _torch_error(model, state) -> str:
    try:
        model.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items()})
    except RuntimeError as error:
        return " ".join(str(error).split())
    raise AssertionError("the state should not fit")
