"""The run-directory contract: what a run leaves on disk, written atomically, and read back.

    runs/<name>/
      config.yaml      resolved config (every default filled in, local paths absolute: bertfit.data.paths)
      labels.json      label names in id order
      env.json         versions, device, precision
      metrics.jsonl    one line per evaluation (step, epoch, train/*, eval/*)
      results.json     best validation and final test metrics, timings, TF-IDF vs the model (tfidf_validation, stack)
      model/           the best model, a Hugging Face model folder: model.safetensors, config.json (model_type
                       bertfit, id2label, auto_map) and modeling_bertfit.py (bertfit.hf_folder), bertfit.json
                       (ModelMeta), tokenizer; with LoRA, model.safetensors holds the head only and adapter/ the
                       PEFT adapter (`bertfit merge` writes a standalone folder); stack/tfidf.npz, the TF-IDF part
                       of a stacked ensemble named by bertfit.json's `stack` (train.stack, `bertfit stack`)
      checkpoint/      last resumable state: model, optimizer, scheduler, scaler, RNG of every rank, data position
                       (written and read by training.checkpoint: safetensors and a weights-only state file)
      export/          ONNX graphs, tokenizer and export.json (ExportMeta), written by `bertfit export`
      tensorboard/     scalars
      audit/           audit.json, label_issues.csv, conflicts.csv, by `bertfit audit`; NAME/ per --relabel run NAME
                       (the corrected training file, changes.csv, the review applied)

`ModelMeta` and `ExportMeta` (bertfit.meta) are the typed records of bertfit.json and export.json:
they are read and written here and nowhere else. Writes go through bertfit.atomic: a crash leaves the old copy or the new.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from bertfit import __version__
from bertfit.atomic import RUN_MARKER, atomic_dir, check_confined, write_json_atomic, write_text_atomic
from bertfit.config import RunConfig, build_config, is_run_name, save_config
from bertfit.data.labels import LabelMap
from bertfit.data.paths import absolute_paths, resolve_stored_paths
from bertfit.errors import BertfitError
from bertfit.hf_folder import encoder_settings, sync_hf_config, write_hf_files
from bertfit.meta import ExportMeta, ModelMeta, read_json

if TYPE_CHECKING:  # torch and the model load only where weights are read or written: `predict` on ONNX needs neither

    from bertfit.model import TextClassifier

MODEL_DIR, CHECKPOINT_DIR, ADAPTER_DIR, EXPORT_DIR = "model", "checkpoint", "adapter", "export"
WEIGHTS_FILE, META_FILE, EXPORT_META = "model.safetensors", "bertfit.json", "export.json"
RESULTS_FILE = "results.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
# `bertfit audit RUN` writes RUN/audit/: the summary, the ranked likely label errors, near-duplicates with conflicting labels
AUDIT_DIR, AUDIT_SUMMARY, AUDIT_ISSUES, AUDIT_CONFLICTS = "audit", "audit.json", "label_issues.csv", "conflicts.csv"


@dataclass(frozen=True)
class LoadedModel:
    model: TextClassifier
    tokenizer: Any
    meta: ModelMeta

    @property
    def labels(self) -> LabelMap:
        return self.meta.label_map


def check_run_dir_free(config: RunConfig, overwrite: bool) -> Path:
    """Refuse, before any work is done, to write over an existing run unless overwrite is set, and to
    replace anything that is not a bertfit run (the name is one folder name inside output_dir)."""
    if config.name is None or not is_run_name(config.name):
        raise BertfitError(f"name: must be one folder name (no / or \\, not . or .., at most 200 bytes), "
                           f"got {config.name!r:.80}")
    run_dir = Path(config.output_dir) / config.name
    if Path(config.output_dir).exists() and not Path(config.output_dir).is_dir():
        raise BertfitError(f"output_dir: {config.output_dir} is a file, not a folder; choose a folder for the runs")
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise BertfitError(f"{run_dir} exists and is not a run directory; choose another name (name)")
    if run_dir.exists() and not overwrite:
        raise BertfitError(f"run directory {run_dir} already exists; choose another name (name), "
                           f"continue it (resume {run_dir}) or replace it (overwrite)")
    if run_dir.exists() and not is_run_dir(run_dir):
        raise BertfitError(f"{run_dir} is not a bertfit run directory (no {RUN_MARKER}), so overwrite will not "
                           "delete it; choose another name (name) or remove it yourself")
    return run_dir


def is_run_dir(path: Path) -> bool:
    """A folder bertfit created for a run: its marker (file names alone prove nothing: `--overwrite` deletes the
    folder, so a folder that merely holds a config.yaml is not taken for a run)."""
    return (path / RUN_MARKER).is_file() and not (path / RUN_MARKER).is_symlink()


def create_run_dir(config: RunConfig, labels: LabelMap, environment: dict[str, Any], overwrite: bool) -> Path:
    """A fresh run directory; an existing run is refused unless overwrite is set."""
    run_dir = check_run_dir_free(config, overwrite)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    with atomic_dir(run_dir) as staging:
        write_text_atomic(staging / RUN_MARKER, "a bertfit run directory: `bertfit train --overwrite` may replace it\n")
        save_config(absolute_paths(config), staging / "config.yaml")  # the run reads its data from any folder
        write_json_atomic(staging / "labels.json", list(labels.names))
        write_json_atomic(staging / "env.json", {"bertfit": __version__, **environment})
    return run_dir


def read_run_config(run_dir: Path) -> RunConfig:
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise BertfitError(f"{run_dir} is not a bertfit run directory (no config.yaml)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a mapping of config sections")
        config = build_config(raw)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, BertfitError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise BertfitError(f"{path}: damaged run config ({first}); restore it from a copy or train again") from None
    return resolve_stored_paths(config, run_dir)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(check_confined(run_dir / "metrics.jsonl"), "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = False
        if record is not None and not (isinstance(record, dict) and isinstance(record.get("step"), int)):
            raise BertfitError(f"{path} line {number}: not an evaluation record (JSON with a step); the file is "
                               "damaged: remove the line, or train the run again")
        records += [record] if record else []
    return records


def read_results(run_dir: Path) -> dict[str, Any]:
    """results.json: best validation and test metrics, steps, timings, rows ({} before training finished)."""
    path = Path(run_dir) / RESULTS_FILE
    return read_json(path) if path.is_file() else {}


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Forget evaluations made after the checkpoint a resumed run restarts from."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= last_step]
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))


def save_model(folder: Path, model: TextClassifier, tokenizer: Any, meta: ModelMeta, marker: str | None = None) -> None:
    """Weights, bertfit.json, tokenizer and the Hugging Face config.json + modelling code, in one atomic folder
    (`marker`: a file that lets a later command replace the folder as bertfit's own)."""
    from safetensors.torch import save_file

    from bertfit.model import head_state, is_lora

    with atomic_dir(folder) as staging:
        state = head_state(model) if is_lora(model) else model.state_dict()
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(state, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        if is_lora(model):  # adapters only: the base encoder is rebuilt from meta.base_model on load
            model.encoder.save_pretrained(staging / ADAPTER_DIR)
            meta = dataclasses.replace(meta, adapter=ADAPTER_DIR)
        tokenizer.save_pretrained(staging)
        write_hf_files(staging, model.encoder.config.to_dict(), meta, tokenizer.pad_token_id)
        write_json_atomic(staging / META_FILE, meta.to_dict())
        if marker:
            write_text_atomic(staging / marker, "a model folder bertfit wrote: `bertfit merge` may replace it\n")


def save_static_model(folder: Path, write_static: Any, tokenizer: Any, meta: ModelMeta) -> None:
    """A static student's folder (bertfit.infer.static): `write_static(path)` writes meta.static; tokenizer, bertfit.json."""
    with atomic_dir(folder) as staging:
        write_static(staging / meta.static)
        tokenizer.save_pretrained(staging)
        write_json_atomic(staging / META_FILE, meta.to_dict())


def model_folder(path: Path) -> Path:
    """A run directory's model/ folder, or the path itself when it is a model folder."""
    path = Path(path)
    for candidate in (path / MODEL_DIR, path):
        if (candidate / META_FILE).is_file():
            return candidate
    raise BertfitError(f"{path}: no trained model found (expected {path / MODEL_DIR / META_FILE}); "
                       "train one with `bertfit train` first")


def read_model_meta(path: Path) -> ModelMeta:
    """bertfit.json of a run directory's model or of a model folder."""
    file = model_folder(path) / META_FILE
    return ModelMeta.from_dict(read_json(file), file)


def update_model_meta(path: Path, **fields: Any) -> ModelMeta:
    """Change fields (thresholds, temperature, ...) of a saved model's bertfit.json; returns the new meta."""
    meta = dataclasses.replace(read_model_meta(path), **fields)
    write_json_atomic(model_folder(path) / META_FILE, meta.to_dict())
    sync_hf_config(model_folder(path), meta)
    return meta


def load_model(path: Path) -> LoadedModel:
    """Rebuild the classifier from a run directory or model folder, without touching the network.
    A damaged folder (bad JSON, missing or truncated weights, a missing key) raises one line naming it.

    The encoder is built without initialising weights (they are read from the file right after),
    which saves seconds on a cold `bertfit predict`.
    """
    folder = model_folder(path)
    meta = read_model_meta(folder)
    if meta.static is not None:
        raise BertfitError(f"{folder}: a static student has no network to load; it predicts with Predictor (backend static)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):  # else every word would read as [UNK]
        raise BertfitError(f"{folder}: the tokenizer is missing (no tokenizer.json or vocabulary file); restore it "
                           "from a copy or train the run again")
    try:
        return _load_model(folder, meta)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise BertfitError(f"{folder}: damaged model folder ({first}); restore it from a copy or train "
                           "the run again") from None


def _load_model(folder: Path, meta: ModelMeta) -> LoadedModel:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from bertfit.model import TextClassifier, encoder_from_settings

    if meta.adapter:
        model = _load_lora_model(folder, meta)
    else:
        model = TextClassifier(encoder_from_settings(encoder_settings(folder)), len(meta.labels), meta.pooling,
                               meta.dropout)
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
    model.eval()
    # The encoder's config, passed on, keeps AutoTokenizer from reading config.json, whose remote code it would ask about.
    tokenizer = AutoTokenizer.from_pretrained(folder, config=model.encoder.config)
    return LoadedModel(model, tokenizer, meta)


def load_saved_weights(path: Path, model: TextClassifier) -> None:
    """Copy a saved model's weights into a live model of the same layout (LoRA adapters included).

    The end of training uses this to return to the best checkpoint without rebuilding the model and
    its tokenizer from disk (load_model does that for a fresh process).
    """
    from safetensors.torch import load_file

    folder = model_folder(path)
    meta = read_model_meta(folder)
    weights = load_file(folder / WEIGHTS_FILE)
    if not meta.adapter:
        model.load_state_dict(weights)
        return
    from peft import set_peft_model_state_dict

    model.load_state_dict(weights, strict=False)  # the head; the encoder's own weights never changed
    adapter = load_file(folder / meta.adapter / "adapter_model.safetensors")
    set_peft_model_state_dict(model.encoder, adapter)


def _load_lora_model(folder: Path, meta: ModelMeta) -> TextClassifier:
    """Base encoder (from meta.base_model) + PEFT adapter + saved head."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from bertfit.model import TextClassifier, load_encoder

    model = TextClassifier(load_encoder(meta.base_model), len(meta.labels), meta.pooling, meta.dropout)
    model.encoder = PeftModel.from_pretrained(model.encoder, folder / meta.adapter)
    unexpected = model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=False).unexpected_keys
    if unexpected:
        raise BertfitError(f"{folder / WEIGHTS_FILE}: unexpected weights {unexpected[:3]}; the folder is damaged")
    return model


def export_folder(path: Path) -> Path | None:
    """The export folder of a run directory or model folder, or `path` itself when it is one."""
    path = Path(path)
    candidates = [path, path / EXPORT_DIR]
    if (path / META_FILE).is_file():  # a run's model/ folder: its export sits beside it
        candidates.append(path.parent / EXPORT_DIR)
    return next((c for c in candidates if (c / EXPORT_META).is_file()), None)


def read_export_meta(folder: Path) -> ExportMeta:
    file = Path(folder) / EXPORT_META
    return ExportMeta.from_dict(read_json(file), file)


def write_export_meta(folder: Path, meta: ExportMeta) -> None:
    write_json_atomic(Path(folder) / EXPORT_META, meta.to_dict())

