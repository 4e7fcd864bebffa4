"""`bertfit export RUN --hf DIR`: the run's classifier as a plain sentence-transformers folder, no remote code.

    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(DIR)          # stock modules: Transformer, Pooling, Dense
    logits = model.encode(texts)              # softmax(logits) = bertfit's probabilities (sigmoid: multi-label)

A sentence-transformers folder is the exact stock form of bertfit's model: the encoder, mean or [CLS]
pooling, then one linear layer. transformers' own classification classes are not exact, since BERT's
reads [CLS] through a dense+tanh pooler that bertfit does not have. The head is written divided by the
calibration temperature, so the folder's output is bertfit's calibrated logits. What bertfit reads
beyond that (sliding windows, head+tail truncation, the TF-IDF stack) has no stock module; the export
keeps the encoder's part and states in `lost` and the folder's README what a loader no longer gets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bertfit import artifacts
from bertfit.atomic import MODEL_MARKER, atomic_dir, check_replaceable, recover_stale, write_json_atomic, write_text_atomic
from bertfit.errors import BertfitError
from bertfit.meta import ModelMeta

POOLING_DIR, DENSE_DIR = "1_Pooling", "2_Dense"
MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
           {"idx": 2, "name": "2", "path": DENSE_DIR, "type": "sentence_transformers.models.Dense"}]
LABELS_FILE = "labels.json"


@dataclasses.dataclass(frozen=True)
class HfExport:
    folder: Path
    lost: tuple[str, ...]  # what bertfit computes that the stock folder does not, one sentence each


def export_hf(run: Path, out: Path) -> HfExport:
    """Write the sentence-transformers folder `out` for a run (or model folder); refuses LoRA adapters that are
    not merged, the run itself and folders bertfit did not write."""
    from safetensors.torch import save_file

    model_dir = artifacts.model_folder(run)
    out = check_replaceable(Path(out), keep=(Path(run), model_dir))
    meta = artifacts.read_model_meta(model_dir)
    if meta.adapter:
        raise BertfitError(f"{run}: the model keeps LoRA adapters; write a standalone folder with `bertfit merge "
                           f"{run} MERGED` and export that with `bertfit export MERGED --hf {out}`")
    recover_stale(out)
    loaded = artifacts.load_model(model_dir)
    lost = lost_in_export(meta)
    encoder, head = loaded.model.encoder, loaded.model.head
    with atomic_dir(out) as staging:
        encoder.config.id2label = dict(enumerate(meta.labels))
        encoder.config.label2id = {name: i for i, name in enumerate(meta.labels)}
        encoder.save_pretrained(staging, state_dict=stock_state(encoder))
        loaded.tokenizer.save_pretrained(staging)
        write_json_atomic(staging / "modules.json", MODULES)
        write_json_atomic(staging / "sentence_bert_config.json", {"max_seq_length": meta.max_length,
                                                                  "do_lower_case": False})
        write_json_atomic(staging / "config_sentence_transformers.json", {"prompts": {}, "default_prompt_name": None,
                                                                          "similarity_fn_name": "cosine"})
        width = encoder.config.hidden_size
        (staging / POOLING_DIR).mkdir()
        write_json_atomic(staging / POOLING_DIR / "config.json", _pooling(meta.pooling, width))
        (staging / DENSE_DIR).mkdir()
        write_json_atomic(staging / DENSE_DIR / "config.json", {
            "in_features": width, "out_features": len(meta.labels), "bias": True,
            "activation_function": "torch.nn.modules.linear.Identity"})
        weights = {"linear.weight": head.weight / meta.temperature, "linear.bias": head.bias / meta.temperature}
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, staging / DENSE_DIR / "model.safetensors",
                  metadata={"format": "pt"})
        write_json_atomic(staging / LABELS_FILE, {"labels": list(meta.labels), "problem_type": meta.problem_type,
                                                  "thresholds": meta.thresholds, "lost": lost})
        write_text_atomic(staging / "README.md", folder_readme(meta, lost))
        write_text_atomic(staging / MODEL_MARKER, "a model folder bertfit wrote: `bertfit export --hf` may replace it\n")
    return HfExport(out, tuple(lost))


def stock_state(encoder: Any) -> dict[str, Any]:
    """The encoder's weights plus zeros for what its stock class holds and bertfit drops (BERT's unused [CLS]
    pooler), so loading the folder reports no missing weights; nothing in the folder reads them."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        stock = AutoModel.from_config(encoder.config)
    state = dict(encoder.state_dict())
    unused = {name: torch.zeros(tensor.shape, dtype=tensor.dtype) for name, tensor in stock.state_dict().items()
              if name not in state}
    return {**state, **unused}


def lost_in_export(meta: ModelMeta) -> list[str]:
    """What a stock sentence-transformers folder cannot compute of this model, in words a user can act on."""
    lost = []
    if meta.window_stride > 0:
        lost.append(f"sliding windows: texts over {meta.max_length} tokens are read as their first {meta.max_length} "
                    "tokens, not as windows pooled (bertfit predict reads every window)")
    elif meta.keep_head < 1.0:
        lost.append(f"head+tail truncation: texts over {meta.max_length} tokens keep their head only, not "
                    f"{meta.keep_head:.0%} head and the rest from the tail")
    if meta.stack is not None:
        lost.append("the TF-IDF stack: the folder gives the encoder's probabilities, not the stacked ensemble's")
    return lost


def _pooling(pooling: str, width: int) -> dict[str, object]:
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    chosen = {"cls": "cls_token", "mean": "mean_tokens"}[pooling]
    return {"word_embedding_dimension": width, "include_prompt": True,
            **{f"pooling_mode_{mode}": mode == chosen for mode in modes}}


def folder_readme(meta: ModelMeta, lost: list[str]) -> str:
    """The folder's README: how to load it with stock sentence-transformers and read the labels."""
    multi = meta.multi_label
    activation = "1 / (1 + np.exp(-logits))" if multi else "np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)"
    lines = [
        "# A bertfit classifier as a sentence-transformers folder", "",
        f"Labels: {', '.join(meta.labels)} ({'multi-label' if multi else 'one per text'}).", "",
        "```python", "import json", "import numpy as np", "from sentence_transformers import SentenceTransformer", "",
        "model = SentenceTransformer(FOLDER)",
        "labels = json.load(open(f\"{FOLDER}/labels.json\"))[\"labels\"]",
        "logits = model.encode([\"some text\"])  # calibrated logits, one per label",
        f"probabilities = {activation}", "```", ""]
    if lost:
        lines += ["What bertfit computes that this folder does not:", "", *(f"- {item}" for item in lost), ""]
    return "\n".join(lines)
