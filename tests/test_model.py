import pytest
import torch

from bertfit.config import ModelConfig
from bertfit.errors import BertfitError
from bertfit.model import TextClassifier, build_classifier, count_parameters, load_encoder, pool
from bertfit.runtime.device import choose_device, choose_precision


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("freeze", ["none", "embeddings", "1", "2", "encoder"])
def test_freezing_leaves_exactly_the_right_parameters_trainable(tiny_model_dir, freeze):
    model = build_classifier(ModelConfig(name=str(tiny_model_dir), freeze=freeze), num_labels=3, seed=0)
    names = _trainable_names(model)
    assert {"head.weight", "head.bias"} <= names
    assert any("embeddings" in n for n in names) == (freeze == "none")
    assert any("layer.0." in n for n in names) == (freeze in ("none", "embeddings"))
    assert any("layer.1." in n for n in names) == (freeze in ("none", "embeddings", "1"))
    trainable, total = count_parameters(model)
    assert (trainable == total) == (freeze == "none")


def test_freezing_more_layers_than_exist_is_an_error(tiny_model_dir):
    with pytest.raises(BertfitError, match="3 layers asked, the encoder has 2"):
        build_classifier(ModelConfig(name=str(tiny_model_dir), freeze="3"), num_labels=2, seed=0)


def test_head_initialisation_depends_on_the_seed_only(tiny_model_dir):
    a = build_classifier(ModelConfig(name=str(tiny_model_dir)), 3, seed=1).head.weight
    torch.rand(100)  # global RNG use in between must not matter
    b = build_classifier(ModelConfig(name=str(tiny_model_dir)), 3, seed=1).head.weight
    c = build_classifier(ModelConfig(name=str(tiny_model_dir)), 3, seed=2).head.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 2.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 1.0]]


def test_padding_does_not_change_logits(tiny_model_dir):
    model = TextClassifier(load_encoder(str(tiny_model_dir)), num_labels=2).eval()
    ids = torch.tensor([[101, 2023, 2003, 102]])
    padded = torch.tensor([[101, 2023, 2003, 102, 0, 0, 0, 0]])
    with torch.no_grad():
        short = model(ids, torch.ones_like(ids))
        long = model(padded, (padded != 0).long())
    torch.testing.assert_close(short, long, rtol=1e-5, atol=1e-5)


def test_precision_chooser():
    cpu = choose_device("cpu")
    assert choose_precision("auto", cpu).name == "fp32" and choose_precision("auto", cpu).autocast_dtype is None
    assert choose_precision("bf16", cpu).autocast_dtype == torch.bfloat16
    assert not choose_precision("bf16", cpu).needs_scaler
    with pytest.raises(BertfitError, match="fp16 needs a GPU"):
        choose_precision("fp16", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(BertfitError, match="no CUDA GPU is visible"):
            choose_device("cuda")


@pytest.mark.parametrize("speedup, trains_in", [(0.4, "fp32"), (1.9, "fp32"), (7.9, "bf16")])
def test_training_on_the_cpu_takes_bf16_where_the_cpu_computes_it_3x_as_fast(monkeypatch, speedup, trains_in):
    from bertfit.runtime import device as devices

    monkeypatch.setattr(devices, "cpu_bf16_speedup", lambda: speedup)
    cpu = choose_device("cpu")
    assert choose_precision("auto", cpu, training=True).name == trains_in
    assert choose_precision("auto", cpu).name == "fp32"  # inference stays fp32, whatever the CPU
    assert choose_precision("fp32", cpu, training=True).name == "fp32"  # a setting wins


def test_the_bf16_probe_measures_without_moving_the_random_streams_or_the_threads():
    from bertfit.runtime.device import cpu_bf16_speedup

    cpu_bf16_speedup.cache_clear()
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    speedup = cpu_bf16_speedup()
    assert 0 < speedup < 1000 and speedup == cpu_bf16_speedup()  # measured once a process
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_a_half_precision_checkpoint_trains_and_reloads_in_float32(tiny_model_dir, tmp_path):
    """transformers 5 builds a model in the dtype its config.json names; bertfit keeps float32 weights
    (half precision is autocast's job), both when it loads the encoder and when it reloads a saved run."""
    from transformers import AutoTokenizer, BertModel

    from bertfit.artifacts import load_model, save_model
    from bertfit.meta import ModelMeta

    half = tmp_path / "bf16-bert"
    BertModel.from_pretrained(tiny_model_dir).to(torch.bfloat16).save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(half)
    model = build_classifier(ModelConfig(name=str(half)), num_labels=2, seed=0)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    model.encoder.config.dtype = torch.bfloat16  # a run folder whose config.json still says bfloat16
    meta = ModelMeta(labels=("a", "b"), max_length=16, pooling="mean", dropout=0.1, base_model=str(half))
    save_model(tmp_path / "model", model, AutoTokenizer.from_pretrained(half), meta)
    assert {p.dtype for p in load_model(tmp_path / "model").model.parameters()} == {torch.float32}
