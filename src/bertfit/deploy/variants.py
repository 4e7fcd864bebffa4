"""Write the files of each export engine: OpenVINO IR and CTranslate2's encoder, beside the ONNX graphs.

    openvino/model.xml, .bin         OpenVINO IR converted from model.onnx (openvino-fp32)
    ct2/                             CTranslate2's BERT encoder (fp32 weights; ct2-int8 quantises them on load)
                                     and head.npz: the classifier's pooling and head, run in NumPy
    static/static.npz                a static student of the run (`export --student RUN`), run in NumPy

An engine whose package is missing, or that cannot convert this architecture, is skipped with its
reason; the caller records it.

OpenVINO int8 is not written: OpenVINO ran ONNX Runtime's dynamic-int8 graph (DynamicQuantizeLinear +
MatMulInteger) several times slower than its fp32 IR, and a statically calibrated QDQ graph was slower
than fp32 too on the AVX-512 machine without VNNI where it was measured (see docs/decisions.md); an
int8 OpenVINO variant needs NNCF's quantisation, which is not a dependency.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit import artifacts
from bertfit.errors import BertfitError
from bertfit.infer import STATIC
from bertfit.infer.backends import CT2_HEAD, unavailable
from bertfit.infer.static import STATIC_FILE

log = logging.getLogger(__name__)

OPENVINO_DIR, CT2_DIR, STATIC_DIR = "openvino", "ct2", "static"
CT2_MODEL_TYPES = ("bert",)  # the encoders CTranslate2's converter maps onto its TransformerEncoder


def write_openvino(folder: Path, onnx_file: str) -> dict[str, str]:
    """OpenVINO IR of the fp32 ONNX graph: {"openvino-fp32": relative path of the .xml}."""
    import openvino

    target = f"{OPENVINO_DIR}/model.xml"
    (folder / OPENVINO_DIR).mkdir(exist_ok=True)
    model = openvino.convert_model(str(folder / onnx_file))
    openvino.save_model(model, str(folder / target), compress_to_fp16=False)  # fp16 weights would change results
    return {"openvino-fp32": target}


def ct2_problem(encoder: torch.nn.Module) -> str | None:
    """Why CTranslate2 cannot run this encoder, or None."""
    reason = unavailable("ct2")
    if reason is not None:
        return reason
    model_type = getattr(getattr(encoder, "config", None), "model_type", None)
    if model_type not in CT2_MODEL_TYPES:
        return f"CTranslate2's converter here supports {', '.join(CT2_MODEL_TYPES)} encoders, not {model_type!r}"
    if getattr(encoder.config, "position_embedding_type", "absolute") != "absolute":
        return "CTranslate2 supports absolute position embeddings only"
    return None


def write_ct2(folder: Path, model: torch.nn.Module, tokenizer: Any, pooling: str, int8: bool) -> dict[str, str]:
    """CTranslate2 encoder + head.npz; variant -> the folder (both precisions share the fp32 weights)."""
    import ctranslate2
    from transformers import AutoModel

    with tempfile.TemporaryDirectory() as scratch:
        # The converter reads a Hugging Face folder; BERT's pooler (unused by our pooling) must exist for it.
        config = copy.deepcopy(model.encoder.config)
        if not hasattr(config, "position_embedding_type"):  # newer transformers drop the field; the converter reads it
            config.position_embedding_type = "absolute"
        encoder = AutoModel.from_config(config)
        missing = encoder.load_state_dict(model.encoder.state_dict(), strict=False).missing_keys
        if any(not key.startswith("pooler.") for key in missing):
            raise BertfitError(f"CTranslate2 export: encoder weights missing {missing[:3]}")
        encoder.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        converter = ctranslate2.converters.TransformersConverter(scratch)
        quiet = logging.getLogger().level
        try:
            converter.convert(str(folder / CT2_DIR), quantization=None, force=True)
        finally:
            logging.getLogger().setLevel(quiet)
    head = model.head
    np.savez(folder / CT2_DIR / CT2_HEAD, weight=head.weight.detach().cpu().numpy(),
             bias=head.bias.detach().cpu().numpy(), pooling=np.asarray(pooling))
    return {"ct2-fp32": CT2_DIR, **({"ct2-int8": CT2_DIR} if int8 else {})}


def write_static(folder: Path, teacher_run: Path, student_run: Path) -> dict[str, str]:
    """A static student's vectors and head beside the exports: {"static": its file}. It reads the teacher's tokens,
    so it must have been distilled from this run: the same tokenizer, labels and cut."""
    meta, teacher = artifacts.read_model_meta(student_run), artifacts.read_model_meta(teacher_run)
    if meta.static is None:
        raise BertfitError(f"--student {student_run}: not a static student; distil one with "
                           f"`bertfit distill {teacher_run} --student static`")
    source, teacher_folder = artifacts.model_folder(student_run), artifacts.model_folder(teacher_run)
    if meta.labels != teacher.labels or meta.cut != teacher.cut or \
            _tokenizer_state(source) != _tokenizer_state(teacher_folder):
        raise BertfitError(f"--student {student_run}: it reads text unlike {teacher_run} (labels, tokenizer or cut "
                           f"differ); distil it from this run with `bertfit distill {teacher_run} --student static`")
    target = f"{STATIC_DIR}/{STATIC_FILE}"
    (folder / STATIC_DIR).mkdir(exist_ok=True)
    shutil.copyfile(source / meta.static, folder / target)
    return {STATIC: target}


def _tokenizer_state(folder: Path) -> Any:
    """tokenizer.json without the truncation and padding a tokenizer remembers from its last call."""
    path = folder / "tokenizer.json"
    state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return state and {k: v for k, v in state.items() if k not in ("truncation", "padding")}
