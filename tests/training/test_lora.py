"""LoRA: adapters train, the head trains, model/ stays small, loading and merging give the same outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertfit.artifacts import load_model
from bertfit.cli.main import main
from bertfit.config import load_config
from bertfit.deploy.merge import save_merged
from bertfit.errors import BertfitError
from bertfit.infer.predictor import Predictor
from bertfit.model import is_lora
from bertfit.training.recipe import train
from conftest import write_csv

LORA = ["--lora.r", "4", "--lora.alpha", "8", "--lora.dropout", "0.0", "--lora.target_modules", "query,value"]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, ag_news_rows, tmp_path_factory):
    """One LoRA run shared by the tests below (they only read it)."""
    folder = tmp_path_factory.mktemp("lora")
    data = write_csv(folder / "train.csv", ag_news_rows[:300])
    config = load_config(None, LORA + [
        "--model.name", str(tiny_model_dir), "--model.max_length", "64", "--output_dir", str(folder / "runs"),
        "--cache_dir", str(folder / "cache"), "--train.progress", "false", "--train.tensorboard", "false",
        "--train.batch_size", "16", "--train.lr", "1e-3", "--train.epochs", "1", "--data.train", str(data),
        "--data.max_train_rows", "64", "--data.max_eval_rows", "32", "--name", "lora", "--train.keep_checkpoint", "true"])
    return train(config)


def test_lora_trains_adapters_and_head_only(lora_run, tiny_model_dir):
    loaded = load_model(lora_run.run_dir)
    assert is_lora(loaded.model)
    from transformers import AutoModel
    original = AutoModel.from_pretrained(tiny_model_dir).state_dict()
    encoder = loaded.model.encoder.get_base_model().state_dict()
    # The frozen encoder weights are the base model's, untouched by training.
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.base_layer.weight"):
        plain = key.replace(".base_layer", "")
        assert torch.equal(encoder[key], original[plain])
    lora_b = [v for k, v in loaded.model.state_dict().items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means adapters trained


def test_lora_model_folder_is_small(lora_run):
    folder = lora_run.run_dir / "model"
    weights = sum(p.stat().st_size for p in [folder / "model.safetensors", *(folder / "adapter").iterdir()])
    checkpoint = (lora_run.run_dir / "checkpoint" / "model.safetensors").stat().st_size
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert weights < checkpoint / 10  # the full encoder is not stored in model/


def test_lora_predict_and_merge_agree(lora_run, tmp_path):
    texts = ["Stocks rallied on Friday after the earnings report", "The team won the final match"]
    predictor = Predictor(lora_run.run_dir, device="cpu")
    assert predictor.labels.names == ("Business", "Sci/Tech", "Sports", "World")
    before = predictor.logits(texts)
    merged = save_merged(lora_run.run_dir, tmp_path / "merged")
    assert not (merged / "adapter").exists()
    after = Predictor(merged, device="cpu").logits(texts)
    np.testing.assert_allclose(before, after, atol=1e-5)
    assert not is_lora(load_model(merged).model)


def test_lora_bad_target_is_a_clear_error(tiny_overrides, ag_news_csv):
    config = load_config(None, tiny_overrides + ["--lora.r", "2", "--lora.target_modules", "nonexistent",
                                                 "--data.train", str(ag_news_csv), "--data.max_train_rows", "32"])
    with pytest.raises(BertfitError, match="lora.target_modules"):
        train(config)


def test_lora_cli_merge(lora_run, tmp_path, capsys):
    assert main(["merge", str(lora_run.run_dir), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["merge", str(tmp_path / "missing"), str(tmp_path / "out2")]) == 2


def test_lora_build_freezes_encoder_not_head(tiny_model_dir):
    from bertfit.config import LoraConfig, ModelConfig
    from bertfit.model import build_classifier

    model = build_classifier(ModelConfig(name=str(tiny_model_dir)), 3, seed=0, lora=LoraConfig(r=4))
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert trainable - {"head.weight", "head.bias"} and all("lora_" in k for k in trainable - {"head.weight", "head.bias"})


def test_lora_with_freeze_is_refused_by_the_config(tiny_model_dir):
    with pytest.raises(BertfitError, match="model.freeze: LoRA"):
        load_config(None, ["--model.name", str(tiny_model_dir), "--model.freeze", "embeddings", "--lora.r", "4"])


def test_lora_run_resumes(tiny_overrides, ag_news_csv):
    import yaml

    from bertfit.artifacts import read_metrics

    config = load_config(None, tiny_overrides + LORA + ["--data.train", str(ag_news_csv), "--data.max_train_rows", "32",
                                                       "--data.max_eval_rows", "16", "--name", "resume",
                                                       "--train.keep_checkpoint", "true"])
    run_dir = train(config).run_dir
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["train"]["epochs"] = 2  # continue the finished run for one more epoch from its checkpoint
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    result = train(resume=run_dir)
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]
    assert result.steps == 4 and is_lora(load_model(run_dir).model)


def test_saved_lora_weights_load_into_a_live_model(lora_run):
    """The end of training returns to the best model in place: head and adapters both come back."""
    from bertfit.artifacts import load_saved_weights

    live = load_model(lora_run.run_dir).model
    saved = {k: v.clone() for k, v in live.state_dict().items()}
    with torch.no_grad():
        for name, parameter in live.named_parameters():
            if "lora_" in name or not name.startswith("encoder."):
                parameter.add_(1.0)
    load_saved_weights(lora_run.run_dir, live)
    restored = live.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[k], restored[k]) for k in saved)


def test_lora_folder_asks_for_a_merge_and_the_merged_folder_loads_in_transformers(lora_run, tmp_path):
    """model/ of a LoRA run holds adapters, not an encoder: transformers says to merge, and the merge loads."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with pytest.raises(ValueError, match="bertfit merge"):
        AutoModelForSequenceClassification.from_pretrained(lora_run.run_dir / "model", trust_remote_code=True)
    merged = save_merged(lora_run.run_dir, tmp_path / "merged")
    texts = ["Stocks rallied on Friday after the earnings report", "The team won the final match"]
    model = AutoModelForSequenceClassification.from_pretrained(merged, trust_remote_code=True)
    with torch.no_grad():
        logits = model(**AutoTokenizer.from_pretrained(merged, trust_remote_code=True)(texts, padding=True,
                                                                                         return_tensors="pt")).logits
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), Predictor(lora_run.run_dir, device="cpu")
                               .predict_proba(texts), atol=1e-5)
