"""config.json of a model folder: the Hugging Face face of bertfit.json, so transformers loads the folder.

A model folder holds bertfit's weights (`encoder.*`, `head.*`), bertfit.json (ModelMeta) and a config.json
whose auto_map points at modeling_bertfit.py, copied beside it (see bertfit.modeling_bertfit). Its
model_type is the encoder's own (bert, mpnet, ...), so a plain `AutoTokenizer.from_pretrained(folder)`,
which reads config.json first, finds a class transformers knows and never asks to run the folder's code;
the sizes a stock model is built from are set so that no stock class can build one (see _TRIPWIRES), and
the folder's classifier loads only with trust_remote_code. Folders of earlier versions name model_type
`bertfit`, or hold the encoder's own config; `encoder_settings` reads all three. Torch-free: bertfit.json
updates rewrite config.json too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from bertfit.atomic import write_json_atomic
from bertfit.meta import ModelMeta, read_json

HF_CONFIG_FILE, MODELING_FILE = "config.json", "modeling_bertfit.py"
HF_MODEL_TYPE = "bertfit"  # the model_type of BertfitConfig, and of config.json in folders of earlier versions
HF_CLASSES = {"AutoConfig": "BertfitConfig", "AutoModelForSequenceClassification": "BertfitForSequenceClassification"}
# The encoder config's fields that describe the classifier, not the encoder: config.json keeps them at the top.
_NOT_ENCODER = ("model_type", "id2label", "label2id", "architectures", "_name_or_path", "problem_type", "auto_map")
# What a stock class (BertModel, AutoModel, a pipeline without trust_remote_code) reads at the top: a hidden size no
# head count divides, so building the stock model fails (every encoder checks it) instead of loading these weights
# under the wrong names and initialising the model at random. The config itself is valid, so tokenizers load.
_TRIPWIRES = {"hidden_size": 1, "num_attention_heads": 3, "num_hidden_layers": 1}


def hf_config(encoder: dict[str, Any], meta: ModelMeta, pad_token_id: int | None) -> dict[str, Any]:
    """config.json for a model: the encoder's settings nested, labels and bertfit's reading settings on top."""
    module = Path(MODELING_FILE).stem
    return {
        "model_type": encoder["model_type"],
        "architectures": [HF_CLASSES["AutoModelForSequenceClassification"]],
        "auto_map": {auto: f"{module}.{name}" for auto, name in HF_CLASSES.items()},
        "encoder_type": encoder["model_type"],
        "encoder": {k: v for k, v in encoder.items() if k not in _NOT_ENCODER},
        **_TRIPWIRES,
        "vocab_size": encoder.get("vocab_size"),  # the tokenizer's ids (and pad id) stay within it
        "id2label": {str(i): name for i, name in enumerate(meta.labels)},
        "label2id": {name: i for i, name in enumerate(meta.labels)},
        "problem_type": meta.problem_type,
        "pad_token_id": pad_token_id,
        "pooling": meta.pooling, "dropout": meta.dropout, "max_length": meta.max_length, "keep_head": meta.keep_head,
        "window_stride": meta.window_stride, "window_pooling": meta.window_pooling,
        "temperature": meta.temperature, "adapter": meta.adapter,
    }


def write_hf_files(folder: Path, encoder: dict[str, Any], meta: ModelMeta, pad_token_id: int | None) -> None:
    """config.json and the modelling code it names, into a model folder being written (its tokenizer saved first)."""
    config = hf_config(encoder, meta, pad_token_id) | tokenizer_class(folder)
    write_json_atomic(Path(folder) / HF_CONFIG_FILE, config)
    shutil.copyfile(Path(__file__).with_name(MODELING_FILE), Path(folder) / MODELING_FILE)


def sync_hf_config(folder: Path, meta: ModelMeta) -> None:
    """After bertfit.json changed (temperature fitted, ...): the same values in config.json, if it is ours."""
    path = Path(folder) / HF_CONFIG_FILE
    if not path.is_file():
        return
    data = read_json(path)
    if is_bertfit_config(data):
        kept = {"tokenizer_class": data["tokenizer_class"]} if "tokenizer_class" in data else {}
        write_json_atomic(path, hf_config(encoder_settings(folder), meta, data.get("pad_token_id")) | kept)


def tokenizer_class(folder: Path) -> dict[str, str]:
    """The folder's tokenizer class for config.json: transformers 4's pipeline() loads a tokenizer for a model type
    it does not know only when config.json names one (AutoTokenizer reads tokenizer_config.json either way)."""
    path = Path(folder) / "tokenizer_config.json"
    name = read_json(path).get("tokenizer_class") if path.is_file() else None
    return {"tokenizer_class": name} if isinstance(name, str) else {}


def encoder_settings(folder: Path) -> dict[str, Any]:
    """The encoder's config as a dict (model_type included), from either config.json layout."""
    data = read_json(Path(folder) / HF_CONFIG_FILE)
    if not is_bertfit_config(data):
        return data
    return {**data["encoder"], "model_type": data["encoder_type"]}


def is_bertfit_config(data: dict[str, Any]) -> bool:
    """config.json in bertfit's layout (the encoder nested), not the encoder's own config of the oldest folders."""
    return isinstance(data.get("encoder"), dict) and "encoder_type" in data
