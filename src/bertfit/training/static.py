"""The static student (`bertfit distill RUN --student static`): a run that predicts in NumPy, many times faster on a CPU.

model2vec distils the teacher run's own fine-tuned encoder into one vector per token of its vocabulary (a forward
pass per token, PCA, frequency weighting); the vectors and a linear head then learn the teacher's probabilities
and the gold labels (and distill.unlabelled's texts) with distillation's loss, the vectors kept where they score
best on validation. The student reads text with the teacher's tokenizer and cut, so it also serves as a variant
beside the teacher's exports (`bertfit export TEACHER --target auto --student RUN`). What it loses is stated: the
log, results.json and the card give its validation accuracy against the teacher's, and a loss beyond
distill.max_accuracy_loss points is a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit import __version__, artifacts
from bertfit.atomic import write_json_atomic
from bertfit.config import RunConfig, replace
from bertfit.data.batching import TokenizedSplit
from bertfit.data.splits import load_dataset
from bertfit.errors import BertfitError
from bertfit.infer import STATIC
from bertfit.infer.engine import InferenceContext
from bertfit.infer.static import NORM_EPSILON, STATIC_FILE, StaticModel
from bertfit.infer.tokens import tokenize_like_training
from bertfit.metrics import classification_metrics, is_improvement
from bertfit.model import merge_lora
from bertfit.runtime.device import Precision, make_scaler
from bertfit.runtime.env import environment
from bertfit.training.distill import distill_config, teacher_logits, with_teacher_targets
from bertfit.training.losses import distillation_loss
from bertfit.training.setup import cache_dir
from bertfit.training.steps import Session, epoch_batches, train_step

log = logging.getLogger(__name__)
DEFAULT_BATCH = 32  # texts a step when the teacher's config leaves train.batch_size unset


@dataclass(frozen=True)
class StaticResult:
    run_dir: Path
    validation: dict[str, float]  # the kept vectors' validation metrics ({} without validation rows)
    test: dict[str, float] | None
    teacher_accuracy: float | None  # the teacher's validation accuracy on the same rows
    accuracy_loss_points: float | None  # teacher minus student, in points (None without validation rows)
    warning: str | None  # the loss, when beyond distill.max_accuracy_loss
    train_seconds: float


def distill_static(teacher_run: str | Path, overrides: list[str] | None = None, overwrite: bool = False) -> StaticResult:
    """Distil TEACHER_RUN into a static student run (OUTPUT_DIR/NAME, as `train` names runs); `overrides` are field
    flags (--distill.static_epochs 10)."""
    config = distill_config(teacher_run, STATIC, overrides)
    if config.name is None:
        config = replace(config, name=time.strftime("%Y%m%d-%H%M%S"))
    artifacts.check_run_dir_free(config, overwrite)  # before any work
    teacher = artifacts.load_model(Path(teacher_run))
    if teacher.meta.static is not None:
        raise BertfitError(f"{teacher_run} is a static student itself; distil from its teacher")
    merge_lora(teacher.model)
    context = InferenceContext.create(teacher.tokenizer.pad_token_id, config.train.eval_batch_size, config.train.device)
    dataset = with_teacher_targets(config, load_dataset(config.data, config.train.seed), context, cache_dir(config))
    run_dir = artifacts.create_run_dir(config, dataset.labels, environment("cpu", "fp32"), overwrite)
    meta = dataclasses.replace(teacher.meta, base_model=STATIC, static=STATIC_FILE, temperature=1.0, step=0, stack=None,
                               thresholds=None, lora=None, adapter=None, merged_from=None, bertfit_version=__version__)
    tokens = {name: tokenize_like_training(meta, teacher.tokenizer, split.texts, split.labels)
              for name, split in dataset.splits.items()}
    vectors, keep = distil_vectors(teacher, config.distill.static_dims)
    started = time.perf_counter()
    model, steps, best_step, validation = fit_static(StaticTraining(config, tokens, vectors, keep, run_dir,
                                                                          meta.labels))
    seconds = time.perf_counter() - started
    meta = dataclasses.replace(meta, step=best_step)
    artifacts.save_static_model(run_dir / artifacts.MODEL_DIR, model.save, teacher.tokenizer, meta)
    test = classification_metrics(_logits(model, tokens["test"]), tokens["test"].document_labels, meta.labels) \
        if "test" in tokens else None
    record = _teacher_comparison(config, teacher, dataset.splits.get("validation"), validation, context)
    write_json_atomic(run_dir / artifacts.RESULTS_FILE, {
        "best_step": best_step, "steps": steps, "validation": validation, "test": test,
        "train_seconds": round(seconds, 2), "train_samples_per_second": round(steps and len(tokens["train"]) *
                                                                             config.distill.static_epochs / seconds, 2),
        "rows": {name: split.documents for name, split in tokens.items()}, "static": record})
    return StaticResult(run_dir, validation, test, record.get("teacher_validation_accuracy"),
                        record.get("accuracy_loss_points"), record.get("warning"), seconds)


def distil_vectors(teacher: artifacts.LoadedModel, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """model2vec's vectors of the teacher's encoder, one row per id of the teacher's tokenizer (zeros for a token
    model2vec left out), and which ids count in a text's mean (not the special tokens)."""
    try:
        from model2vec.distill import distill_from_model
    except ImportError:
        raise BertfitError("the static student needs model2vec: pip install 'bertfit[static]'") from None
    encoder, tokenizer = teacher.model.encoder, teacher.tokenizer
    hidden = int(encoder.config.hidden_size)
    # A local path as the encoder's name: model2vec then looks nothing up on the Hugging Face Hub.
    encoder.name_or_path = str(teacher.meta.base_model) if Path(str(teacher.meta.base_model)).exists() else "."
    static = distill_from_model(model=encoder.cpu(), tokenizer=tokenizer, pca_dims=min(dims, hidden), device="cpu",
                                quantize_to="float32")
    vocabulary = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocabulary.values()) + 1)
    vectors = np.zeros((size, static.embedding.shape[1]), dtype=np.float32)
    found = [(vocabulary[token], row) for row, token in enumerate(static.tokens) if token in vocabulary]
    if len(found) < len(vocabulary) // 2:
        raise BertfitError(f"model2vec kept {len(found)} of the teacher's {len(vocabulary)} tokens; this tokenizer "
                           "cannot carry a static student")
    ids, rows = np.array(found).T
    vectors[ids] = np.asarray(static.embedding, dtype=np.float32)[rows]
    keep = np.zeros(size, dtype=bool)
    keep[ids] = True
    keep[list(tokenizer.all_special_ids)] = False
    log.info("static vectors: %d tokens x %d dimensions from %s", len(found), vectors.shape[1], teacher.meta.base_model)
    return vectors, keep


class StaticNet(torch.nn.Module):
    """What bertfit.infer.static computes, in torch for training: the normalised mean of kept token vectors, a head."""

    def __init__(self, vectors: np.ndarray, keep: np.ndarray, num_labels: int):
        super().__init__()
        self.vectors = torch.nn.Embedding.from_pretrained(torch.from_numpy(vectors), freeze=False)
        self.register_buffer("keep", torch.from_numpy(keep.astype(np.float32)))
        self.head = torch.nn.Linear(vectors.shape[1], num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = self.keep[input_ids] * attention_mask
        means = (self.vectors(input_ids) * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(means / (means.norm(dim=-1, keepdim=True) + NORM_EPSILON))

    def to_static(self) -> StaticModel:
        keep = self.keep.numpy() > 0
        return StaticModel(self.vectors.weight.detach().numpy().copy(), keep, self.head.weight.detach().numpy().copy(),
                           self.head.bias.detach().numpy().copy())


@dataclass(frozen=True)
class StaticTraining:
    """What the student's training reads: the config, the tokenised splits (train carries the teacher's targets)."""

    config: RunConfig
    tokens: dict[str, TokenizedSplit]
    vectors: np.ndarray
    keep: np.ndarray
    run_dir: Path
    names: tuple[str, ...]  # label names in id order


def fit_static(job: StaticTraining) -> tuple[StaticModel, int, int, dict[str, float]]:
    """Train the vectors and head through the one training step (training.steps.train_step) on the loop's batches;
    the best evaluation on validation (train.metric) is kept, or the last without validation rows. Returns the model,
    the steps done, the step kept and its validation metrics."""
    config, train = job.config, job.tokens["train"]
    torch.manual_seed(config.train.seed)
    cfg = dataclasses.replace(config.train, batch_size=config.train.batch_size or DEFAULT_BATCH, grad_accum_steps=1,
                              epochs=config.distill.static_epochs, max_steps=0)
    net = StaticNet(job.vectors, job.keep, train.labels.shape[1] // 2)  # teacher logits beside the gold one-hot rows
    optimizer = torch.optim.Adam(net.parameters(), lr=config.distill.static_lr)
    session = Session(net, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                      make_scaler(torch.device("cpu"), Precision("fp32", None)),
                      distillation_loss(config.distill.temperature, config.distill.alpha),
                      InferenceContext.cpu(0, cfg.eval_batch_size), max_grad_norm=0.0)
    best: tuple[StaticModel, int, dict[str, float]] | None = None
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        total = 0.0
        for batch in epoch_batches(session, train, cfg, epoch, 0)[1]:
            total, step = total + train_step(session, [batch]).item() * len(batch["labels"]), step + 1
        model = net.to_static()
        metrics = _validation(model, job.tokens.get("validation"), job.names)
        artifacts.append_metrics(job.run_dir, {"step": step, "epoch": epoch, "train/loss": total / len(train),
                                               **{f"eval/{k}": v for k, v in metrics.items()}})
        score = metrics.get(cfg.metric)
        if best is None or score is None or is_improvement(cfg.metric, score, best[2].get(cfg.metric)):
            best = (model, step, metrics)
        log.info("static student epoch %d: train loss %.4f%s", epoch, total / len(train),
                 f", validation {cfg.metric} {score:.4f}" if score is not None else "")
    return best[0], step, best[1], best[2]


def _validation(model: StaticModel, split: TokenizedSplit | None, names: tuple[str, ...]) -> dict[str, float]:
    if split is None or not split.documents:
        return {}
    return classification_metrics(_logits(model, split), split.document_labels, names)


def _logits(model: StaticModel, split: TokenizedSplit) -> np.ndarray:
    return split.document_logits(model.logits(split)).astype(np.float64)


def _teacher_comparison(config: RunConfig, teacher: artifacts.LoadedModel, validation: Any,
                        student: dict[str, float], context: InferenceContext) -> dict[str, Any]:
    """results.json's `static` record: the teacher's validation accuracy beside the student's, the loss in points,
    and the warning when it exceeds distill.max_accuracy_loss."""
    bound = config.distill.max_accuracy_loss
    record: dict[str, Any] = {"teacher": config.distill.teacher, "max_accuracy_loss": bound}
    if validation is None or not len(validation) or "accuracy" not in student:
        log.warning("no validation rows: the static student's accuracy loss against its teacher is not measured")
        return record
    logits = teacher_logits(teacher, list(validation.texts), context, cache_dir(config))
    teacher_accuracy = float(np.mean(logits.argmax(-1) == np.asarray(validation.labels)))
    loss = round(100 * (teacher_accuracy - student["accuracy"]), 2)
    record |= {"teacher_validation_accuracy": teacher_accuracy, "validation_accuracy": student["accuracy"],
               "accuracy_loss_points": loss, "validation_rows": len(validation)}
    log.info("static student: validation accuracy %.4f, teacher %.4f (%.2f points lost, %d rows)",
             student["accuracy"], teacher_accuracy, loss, len(validation))
    if loss > bound:
        record["warning"] = (f"the static student loses {loss:.2f} accuracy points against its teacher on validation "
                             f"({student['accuracy']:.4f} vs {teacher_accuracy:.4f}), beyond distill.max_accuracy_loss "
                             f"{bound:g}: serve the teacher (or an export of it) where those points matter")
        log.warning("%s", record["warning"])
    return record
