"""An ONNX BERT graph with Hugging Face weight names -> a BertModel folder, checked against the graph's own output.

Exporters keep the names of biases, LayerNorms and embeddings but fold each Linear weight into an
anonymous, transposed MatMul constant (`onnx::MatMul_470`). The Add that follows a MatMul names its
bias (`...query.bias`), which names the weight (`...query.weight`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

MODULE_ROOTS = ("embeddings.", "encoder.")  # where Hugging Face names start after any wrapper prefix
CHECK_TEXTS = ("A quick check of the converted encoder.", "Stocks rallied on Friday after the report.",
               "short", "The team won the final in extra time, their third title in five years.")
CHECK_TOLERANCE = 1e-4  # max absolute difference of the last hidden states, fp32


def _load_onnx(path: Path) -> Any:
    try:
        import onnx
    except ImportError:
        raise BertfitError("converting an ONNX model needs onnx and onnxruntime: pip install 'bertfit[serve]'") from None
    return onnx.load(str(path))


def bert_state(graph: Any) -> dict[str, np.ndarray]:
    """Hugging Face BertModel weights from the graph's initialisers: named ones as they are, MatMul
    constants named after the bias their Add adds, transposed back to Linear's (out, in) layout."""
    from onnx import numpy_helper

    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    state = {_hf_name(name): value for name, value in values.items() if _hf_name(name)}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in values or _hf_name(node.input[1]):
            continue
        biases = [_hf_name(name) for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                  for name in add.input if _hf_name(name).endswith(".bias")]
        if len(biases) != 1:
            raise BertfitError(f"cannot name the MatMul weight {node.input[1]}: no single bias is added to its output")
        state[biases[0].removesuffix(".bias") + ".weight"] = values[node.input[1]].T.copy()
    return state


def _hf_name(name: str) -> str:
    """'model.0.auto_model.encoder.layer.0.output.dense.bias' -> 'encoder.layer.0.output.dense.bias' ('' if unnamed)."""
    starts = [name.find(root) for root in MODULE_ROOTS if name.find(root) >= 0]
    return name[min(starts):] if starts else ""


def bert_config(state: dict[str, np.ndarray], heads: int, layer_norm_eps: float) -> Any:
    from transformers import BertConfig

    layers = {int(name.split(".")[2]) for name in state if name.startswith("encoder.layer.")}
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=heads,
                      intermediate_size=state["encoder.layer.0.intermediate.dense.bias"].shape[0],
                      max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
                      type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
                      layer_norm_eps=layer_norm_eps)


def layer_norm_eps(graph: Any, default: float = 1e-12) -> float:
    """The epsilon of the graph's first LayerNormalization node (Hugging Face BERT: 1e-12)."""
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            return next((a.f for a in node.attribute if a.name == "epsilon"), default)
    return default


def convert(onnx_path: Path, heads: int, out: Path) -> Any:
    """Write a BertModel (config.json + model.safetensors) built from the graph's weights into `out`."""
    from transformers import BertModel

    graph = _load_onnx(onnx_path).graph
    state = bert_state(graph)
    model = BertModel(bert_config(state, heads, layer_norm_eps(graph)))
    # The graph has no pooler (bertfit drops it too); zeros keep the saved folder complete and loads quiet.
    state |= {name: np.zeros(tuple(value.shape), np.float32) for name, value in model.state_dict().items()
              if name.startswith("pooler.")}
    expected = set(model.state_dict()) - {"embeddings.position_ids", "embeddings.token_type_ids"}
    missing, unknown = expected - set(state), set(state) - expected
    if missing or unknown:
        raise BertfitError(f"{onnx_path}: not a BERT graph with Hugging Face names (missing {sorted(missing)[:3]}, "
                           f"unexpected {sorted(unknown)[:3]})")
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)
    model.save_pretrained(out)
    log.info("converted %s: %d layers, hidden %d, %s parameters", onnx_path.name, model.config.num_hidden_layers,
             model.config.hidden_size, f"{sum(p.numel() for p in model.parameters()):,}")
    return model


def check_against_graph(onnx_path: Path, model_dir: Path, tokenizer: Any) -> float:
    """Max absolute difference between the graph's token vectors and the converted model's, on a few
    padded texts; raises when it exceeds CHECK_TOLERANCE (a wrong name, layout or head count)."""
    import onnxruntime
    from transformers import BertModel

    encoded = tokenizer(list(CHECK_TEXTS), padding=True, return_tensors="np")
    ids, mask = encoded["input_ids"].astype(np.int64), encoded["attention_mask"].astype(np.int64)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}.items()
             if k in names}
    outputs = session.run(None, feeds)
    reference = next((out for out in outputs if out.ndim == 3), None)
    if reference is None:
        raise BertfitError(f"{onnx_path}: the graph has no token-vector output to check the conversion against")
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.inference_mode():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    real = mask.astype(bool)
    difference = float(np.abs(hidden[real] - reference[real]).max())
    if not difference <= CHECK_TOLERANCE:
        raise BertfitError(f"{onnx_path}: the converted model differs from the ONNX graph by {difference:.2e} "
                           f"(tolerance {CHECK_TOLERANCE:.0e}); the conversion is wrong, nothing was installed")
    log.info("conversion checked against the ONNX graph: max difference %.2e on %d texts", difference, len(CHECK_TEXTS))
    return difference
