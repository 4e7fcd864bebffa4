"""Distillation: a student model trained on a teacher run's softened probabilities, through the ordinary loop.

`distill_config(teacher_run, student)` is the teacher's config with the student's model.name and a
`distill` section; `train` then reads it like any run (resume, progress, report). The teacher's logits
over the training texts (plus any unlabelled texts) come from the inference engine once and are
cached; the student's training targets are those logits beside the gold labels (see losses).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from bertfit import artifacts
from bertfit.atomic import atomic_file
from bertfit.config import DataConfig, RunConfig, build_config, config_to_dict
from bertfit.config_values import parse_overrides, set_dotted
from bertfit.data.read import read_file
from bertfit.data.splits import Split, TextDataset
from bertfit.data.tables import join_text_columns
from bertfit.errors import BertfitError
from bertfit.infer.engine import InferenceContext, text_logits

log = logging.getLogger(__name__)


def distill_config(teacher_run: str | Path, student: str, overrides: list[str] | None = None) -> RunConfig:
    """The teacher's data and training settings, the student's model, field flags (`--train.lr 1e-4`) on top."""
    teacher = artifacts.read_run_config(Path(teacher_run))
    artifacts.read_model_meta(Path(teacher_run))  # the teacher finished training: it has a model
    raw = config_to_dict(teacher)
    raw["name"] = None
    raw["model"] |= {"name": student, "init_from": None, "freeze": "none"}
    # train.stack: the student's end of training fits no stack (its targets are the teacher's); `bertfit stack` can
    raw["train"] |= {"class_weights": "none", "label_smoothing": 0.0, "stack": "auto"}
    raw.pop("lora")  # the student trains whole unless a flag says otherwise
    raw["distill"] = {**raw["distill"], "teacher": str(teacher_run)}
    for dotted, value in parse_overrides(overrides or []):
        set_dotted(raw, dotted, value)
    return build_config(raw)


def with_teacher_targets(config: RunConfig, dataset: TextDataset, context: InferenceContext,
                         cache_dir: Path | None) -> TextDataset:
    """`dataset` whose training split (plus distill.unlabelled's texts) carries the teacher's logits and the
    gold one-hot rows side by side (zeros where a text has no gold label), the targets of the distillation loss."""
    teacher = artifacts.load_model(Path(config.distill.teacher))
    names = dataset.labels.names
    if tuple(teacher.meta.labels) != tuple(names):
        raise BertfitError(f"distill.teacher: {config.distill.teacher} was trained on the labels {list(teacher.meta.labels)}, "
                           f"this data has {list(names)}; distil on the teacher's data")
    train = dataset.splits["train"]
    extra = read_unlabelled(config.distill.unlabelled, config.data) if config.distill.unlabelled else []
    texts = list(train.texts) + extra
    logits = teacher_logits(teacher, texts, context, cache_dir)
    gold = np.zeros((len(texts), len(names)), dtype=np.float32)
    gold[np.arange(len(train)), np.asarray(train.labels, dtype=np.int64)] = 1.0
    agreement = float((logits[:len(train)].argmax(-1) == np.asarray(train.labels)).mean())
    log.info("teacher %s: %d labelled + %d unlabelled texts; agrees with %.1f%% of the gold labels",
             config.distill.teacher, len(train), len(extra), 100 * agreement)
    source = train.source + (f" + {config.distill.unlabelled} (unlabelled)" if extra else "")
    targets = np.concatenate([logits, gold], axis=1)
    return TextDataset({**dataset.splits, "train": Split("train", source, texts, targets)}, dataset.labels)


def teacher_logits(teacher: artifacts.LoadedModel, texts: list[str], context: InferenceContext,
                   cache_dir: Path | None) -> np.ndarray:
    """The teacher's raw logits (no calibration temperature) for `texts`, computed once per teacher and texts."""
    path = cache_dir / "teacher" / f"{_cache_key(teacher, texts)}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        log.info("teacher logits cache hit: %s", path)
        return np.load(path)
    log.info("teacher logits for %d texts", len(texts))
    model = teacher.model.to(context.device)
    teacher_context = InferenceContext(context.device, context.precision, teacher.tokenizer.pad_token_id,
                                       context.batch_size)
    logits = text_logits(model, teacher.tokenizer, teacher.meta, texts, teacher_context)
    if path is not None:
        with atomic_file(path, "wb") as file:
            np.save(file, logits)
    return logits


def _cache_key(teacher: artifacts.LoadedModel, texts: list[str]) -> str:
    """The teacher's weights (by content) and the texts; a retrained teacher gets new logits."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes()[:4096])  # a cheap but weight-specific print
        digest.update(str(float(tensor.float().sum())).encode())
    digest.update(teacher.meta.cut.key.encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def read_unlabelled(spec: str, data: DataConfig) -> list[str]:
    """The texts of distill.unlabelled (its data.text_columns joined, as training reads them)."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise BertfitError(f"distill.unlabelled: file {spec} not found")
    columns = read_file(path, data)
    for column in data.text_columns:
        if column not in columns:
            raise BertfitError(f"{path}: column {column!r} not found (columns: {', '.join(map(str, columns))}); "
                               "set data.text_columns")
    texts = join_text_columns(columns, data.text_columns)
    for row, text in enumerate(texts, start=1):
        if not text:
            raise BertfitError(f"{path} row {row}: empty text in {', '.join(data.text_columns)}; fix or remove the row")
    if not texts:
        raise BertfitError(f"distill.unlabelled: {path} has no rows")
    return texts
