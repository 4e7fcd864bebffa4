"""An MPNet encoder (mpnet-base's architecture: no token type ids, pad id 1) trains, reloads and exports like BERT."""

import pytest

from bertfit import artifacts
from bertfit.config import load_config
from bertfit.infer.predictor import Predictor
from bertfit.training.recipe import train


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory, tiny_model_dir):
    """A 2-layer, hidden-32 MPNet with random weights (the tiny BERT's tokenizer: the model code is under test)."""
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    folder = tmp_path_factory.mktemp("tiny-mpnet")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    MPNetModel(MPNetConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=130)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_mpnet_run_trains_reloads_and_exports(tiny_mpnet_dir, tiny_overrides, ag_news_csv):
    pytest.importorskip("onnxruntime")
    from bertfit.deploy.export import export_run

    result = train(load_config(None, [*tiny_overrides, "--model.name", str(tiny_mpnet_dir), "--data.train",
                                      str(ag_news_csv), "--data.max_train_rows", "64", "--model.freeze", "1",
                                      "--name", "mpnet"]))
    assert result.steps == 4 and type(artifacts.load_model(result.run_dir).model.encoder).__name__ == "MPNetModel"
    texts = ["Stocks rallied on Friday", "The team won the final"]
    reloaded = Predictor(result.run_dir, backend="torch").predict_proba(texts)
    check = export_run(result.run_dir, int8=False, max_rows=20).check
    assert check["onnx-fp32"]["same_label_fraction"] == 1.0 and check["onnx-fp32"]["max_probability_difference"] < 1e-4
    assert abs(Predictor(result.run_dir, backend="onnx-fp32").predict_proba(texts) - reloaded).max() < 1e-4
