"""Export of a trained run for CPU serving, a self-check against PyTorch, and a choice of backend.

    RUN/export/
      model.onnx        input_ids, attention_mask (int64, dynamic batch and sequence) -> logits
      model.int8.onnx   the same graph with int8 weights (dynamic quantisation), when asked for
      openvino/, ct2/   the OpenVINO (fp32) and CTranslate2 (fp32, int8) variants (bertfit.deploy.variants)
      tokenizer files   so the folder serves on its own, without the PyTorch weights
      stack/tfidf.npz   the TF-IDF part of the run's stacked ensemble, when it has one (bertfit.infer.stack)
      export.json       labels, temperature, max_length, pad id, files, the self-check, the choice
      README.md         what was exported, how it compares with PyTorch, and what serves

`--target onnx | openvino | ct2` writes that engine (ONNX always: the others start from it or sit
beside it). `--target auto` writes every engine this machine can run, in fp32 and int8, times each
with the serving batch shape, and records the fastest whose accuracy is within `max_accuracy_loss`
points of PyTorch's as the choice `serve` and `predict` use. Whatever the target, `serve` and
`predict` use a variant only if it is within that bound (ExportMeta.served_variant): what serves is
what passed. The self-check (bertfit.deploy.check)
runs PyTorch and every variant on held-out labelled texts, so a broken or lossy export is visible
before anyone serves it. With a stack, the check compares the network's probabilities (like with like);
the TF-IDF part is the same file and NumPy code on every variant.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bertfit import __version__, artifacts
from bertfit.atomic import atomic_dir, recover_stale, write_text_atomic
from bertfit.deploy import variants
from bertfit.deploy.check import CheckSample, check_sample, self_check
from bertfit.deploy.choose import pick, selection_record, time_backends
from bertfit.errors import BertfitError, require
from bertfit.evaluate.model_card import export_card_lines
from bertfit.infer import ENGINES
from bertfit.infer.backends import TorchBackend, open_export, unavailable
from bertfit.infer.engine import InferenceContext
from bertfit.infer.stack import open_stack
from bertfit.meta import ExportMeta, ModelMeta
from bertfit.model import merge_lora
from bertfit.runtime.cpu import cpu_features

log = logging.getLogger(__name__)

FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
OPSET = 17
TARGETS = ("onnx", *ENGINES[1:], "auto")


@dataclass(frozen=True)
class ChoiceSettings:
    """How `--target auto` times the candidates and which accuracy loss it accepts."""

    max_accuracy_loss: float = 0.5  # points of accuracy below PyTorch's on the check sample
    threads: int = 1  # CPU threads per model call while timing (serve with the same --threads)
    time_batch: int = 10  # texts per model call: about what the serve micro-batcher merges under load
    time_rows: int = 200  # texts per timing round
    time_rounds: int = 3


def export_run(run_dir: str | Path, int8: bool = True, max_rows: int | None = None, batch_size: int = 64,
               target: str = "onnx", student: str | Path | None = None, **choice: Any) -> ExportMeta:
    """Export RUN's best model to RUN/export for `target`, check it, choose (auto), write export.json.
    `student`: a static student of RUN, one more variant (static), checked, timed and chosen by the same rule.
    `choice` holds the fields of ChoiceSettings (max_accuracy_loss, threads, time_batch, time_rows, time_rounds)."""
    require("serve", "an export", "onnx", "onnxruntime")
    settings = _validated(target, max_rows, ChoiceSettings(**choice))
    if batch_size < 1:
        raise BertfitError(f"batch_size: must be >= 1, got {batch_size}")
    run_dir = Path(run_dir)
    loaded = artifacts.load_model(run_dir)
    if loaded.meta.multi_label:
        raise BertfitError(f"{run_dir}: export of multi-label runs is not supported yet; serve it with backend torch")
    merge_lora(loaded.model)  # a plain encoder + head: no PEFT needed at inference
    int8 = int8 or target == "auto"
    recover_stale(run_dir / artifacts.EXPORT_DIR)  # staging folders an interrupted export left
    with atomic_dir(run_dir / artifacts.EXPORT_DIR) as staging:
        started = time.perf_counter()
        files, skipped = _write_variants(staging, loaded, target, int8)
        if student is not None:
            files.update(variants.write_static(staging, run_dir, Path(student)))
        loaded.tokenizer.save_pretrained(staging)
        _copy_stack(artifacts.model_folder(run_dir), staging, loaded.meta)
        model = dataclasses.replace(loaded.meta, bertfit_version=__version__)
        meta = ExportMeta(model, loaded.tokenizer.pad_token_id, files, OPSET, round(time.perf_counter() - started, 2))
        sample = check_sample(run_dir, loaded, max_rows)
        reference = TorchBackend(loaded.model, InferenceContext.cpu(meta.pad_token_id, batch_size))
        checked = {name: open_export(staging, meta, name, batch_size) for name in files}
        check = self_check(sample, reference, checked, loaded.meta.temperature)
        # The bound travels with the check: predict and serve apply it to every export, not only --target auto.
        meta = dataclasses.replace(meta, check={**check, "max_accuracy_loss": settings.max_accuracy_loss})
        if target == "auto":
            meta = _choose(staging, meta, loaded, sample, settings, skipped)
        elif target != "onnx":
            int8_variant = f"{target}-int8"
            meta = dataclasses.replace(meta, choice=int8_variant if int8_variant in files else f"{target}-fp32")
        artifacts.write_export_meta(staging, meta)
        write_text_atomic(staging / "README.md", "\n".join(export_card_lines(meta)) + "\n")
    log.info("exported %s to %s", run_dir, run_dir / artifacts.EXPORT_DIR)
    return meta


def _copy_stack(model_folder: Path, staging: Path, meta: ModelMeta) -> None:
    """The stack's TF-IDF file at the same relative path (export.json carries the same record); a damaged
    file stops the export with one line naming it."""
    if open_stack(model_folder, meta) is None:
        return
    target = staging / meta.stack.file
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_folder / meta.stack.file, target)


def _validated(target: str, max_rows: int | None, settings: ChoiceSettings) -> ChoiceSettings:
    if target not in TARGETS:
        raise BertfitError(f"target: unknown {target!r}; use one of {', '.join(TARGETS)}")
    if max_rows is not None and max_rows < 1:
        raise BertfitError(f"max_rows: must be >= 1, got {max_rows}")
    if settings.max_accuracy_loss < 0:
        raise BertfitError(f"max_accuracy_loss: must be >= 0 points, got {settings.max_accuracy_loss}")
    for name in ("threads", "time_batch", "time_rows", "time_rounds"):
        if getattr(settings, name) < 1:
            raise BertfitError(f"{name}: must be >= 1, got {getattr(settings, name)}")
    return settings


def _write_variants(folder: Path, loaded: artifacts.LoadedModel, target: str,
                    int8: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The files of every engine the target asks for: variant -> path, and variant -> why it was skipped.
    An explicit target that cannot be written stops the export; auto skips it and says why."""
    export_onnx(loaded.model, folder / FP32_FILE)
    files = {"onnx-fp32": FP32_FILE}
    if int8:
        quantize_int8(folder / FP32_FILE, folder / INT8_FILE)
        files["onnx-int8"] = INT8_FILE
    skipped: dict[str, str] = {}
    writers = {"openvino": lambda: variants.write_openvino(folder, FP32_FILE),
               "ct2": lambda: variants.write_ct2(folder, loaded.model, loaded.tokenizer, loaded.meta.pooling, int8)}
    for engine, write in writers.items():
        if target not in (engine, "auto"):
            continue
        problem = variants.ct2_problem(loaded.model.encoder) if engine == "ct2" else unavailable(engine)
        if problem is None:
            try:
                files.update(write())
                continue
            except Exception as error:  # a converter's failure: its message is the reason
                problem = f"{type(error).__name__}: {str(error)[:300]}"
        if target == engine:
            raise BertfitError(f"target {engine}: {problem}")
        log.warning("skipping %s: %s", engine, problem)
        precisions = ("fp32", "int8") if int8 and engine != "openvino" else ("fp32",)
        skipped.update({f"{engine}-{precision}": problem for precision in precisions})
    return files, skipped


def _choose(folder: Path, meta: ExportMeta, loaded: artifacts.LoadedModel, sample: CheckSample, settings: ChoiceSettings,
            skipped: dict[str, str]) -> ExportMeta:
    """Time PyTorch and every variant with the serving batch shape and record the fastest within the bound."""
    texts = sample.texts[:settings.time_rows]  # held-out texts of real lengths
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        candidates = {"torch": TorchBackend(loaded.model, InferenceContext.cpu(meta.pad_token_id, settings.time_batch))}
        candidates.update({name: open_export(folder, meta, name, settings.time_batch, settings.threads)
                           for name in meta.files})
        timings = time_backends(candidates, loaded.meta, loaded.tokenizer, texts, settings.time_batch, settings.time_rounds)
    finally:
        torch.set_num_threads(previous_threads)
    choice, eligible = pick(timings, meta.check, settings.max_accuracy_loss)
    record = selection_record(choice, eligible, timings, dataclasses.asdict(settings), skipped, cpu_features())
    log.info("chose %s (%.2fx PyTorch) on %s", choice, timings[choice]["vs_torch"], record["cpu"]["model"])
    return dataclasses.replace(meta, choice=choice, selection=record)


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Trace the classifier with the TorchScript-based exporter; batch and sequence axes stay dynamic."""
    model = model.eval().cpu()
    # SDPA attention traces its padding mask as -inf + Softmax + IsNaN/Where (about a quarter of the int8
    # graph's CPU time); eager attention traces the plain additive mask, same numbers, fewer kernels.
    previous = _set_attention(model.encoder, "eager")
    try:
        _trace(model, path)
    finally:
        _set_attention(model.encoder, previous)


def _set_attention(encoder: torch.nn.Module, implementation: str | None) -> str | None:
    """Switch a transformers encoder's attention kernel; returns the previous one (None: not switchable)."""
    config = getattr(encoder, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if implementation is None or previous is None or not hasattr(encoder, "set_attn_implementation"):
        return previous
    try:
        encoder.set_attn_implementation(implementation)
    except (ValueError, ImportError) as error:  # an architecture without eager attention: trace as it is
        log.warning("%s: keeping %s attention for the export (%s)", type(encoder).__name__, previous, error)
    return previous


def _trace(model: torch.nn.Module, path: Path) -> None:
    # Two rows of different lengths, so no shape is constant-folded into the graph.
    input_ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.int64)
    attention_mask = (input_ids != 0).to(torch.int64)
    dynamic = {0: "batch", 1: "sequence"}
    try:
        torch.onnx.export(model, (input_ids, attention_mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                                                 "logits": {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, **_torchscript_exporter())
    except Exception as error:  # the exporter raises many types; the user needs the model and the cause
        raise BertfitError(f"ONNX export of {type(model.encoder).__name__} failed: {error}") from error


def _torchscript_exporter() -> dict[str, bool]:
    """dynamo=False where torch has the keyword (2.5 on, whose default became the dynamo exporter); before it, the
    TorchScript exporter is the only one."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic quantisation: int8 weights for MatMul/Gemm, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime's quantiser logs a line per tensor on the root logger; keep the CLI output readable.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        # Per-channel scales keep small classifier heads accurate; QInt8 weights run fast on x86 (VNNI/AVX2).
        # 7-bit weights (reduce_range): without VNNI, x86's u8 x s8 kernels add pairs of products in saturating
        # 16-bit sums, which wrecked all-mpnet-base-v2 (-44 points); an exported file may run on any CPU.
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        root.setLevel(level)


