"""The `distill` section of the run config: train a student on a teacher run's softened probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bertfit.config_values import config_field


@dataclass(frozen=True)
class DistillConfig:
    teacher: str | None = config_field(None, "distillation: the teacher's run directory; the model learns its "
                                             "probabilities (see `bertfit distill`); unset: ordinary training")
    temperature: float = config_field(2.0, "softens the teacher's and the student's probabilities (logits / T); "
                                           "the soft loss is scaled by T^2", lambda v: v > 0, "must be > 0")
    alpha: float = config_field(0.5, "weight of the teacher's probabilities on labelled rows (1 - alpha on the gold "
                                     "label); unlabelled rows learn from the teacher alone",
                                lambda v: 0 <= v <= 1, "must be in [0, 1]")
    unlabelled: str | None = config_field(None, "a file of unlabelled texts (data.text_columns) the student also "
                                                "learns from, labelled by the teacher")
    static_dims: int = config_field(256, "static student: dimensions of its token vectors (model2vec's PCA of the teacher's; "
                                         "at most the encoder's hidden size)", lambda v: v >= 2, "must be >= 2")
    static_epochs: int = config_field(5, "static student: passes over the training texts", lambda v: v >= 1,
                                      "must be >= 1")
    static_lr: float = config_field(5e-3, "static student: Adam's learning rate for its vectors and head (far above a "
                                          "transformer's: nothing pretrained to keep)", lambda v: v > 0, "must be > 0")
    max_accuracy_loss: float = config_field(3.0, "static student: validation accuracy points it may lose against the "
                                                 "teacher before distillation warns", lambda v: v >= 0, "must be >= 0")


def distill_problems(config: Any) -> list[str]:
    """What distillation cannot be combined with (config: a RunConfig)."""
    if config.distill.teacher is None:
        return ["distill.unlabelled: needs distill.teacher (unlabelled texts are labelled by the teacher)"] \
            if config.distill.unlabelled else []
    problems = []
    if config.data.multi_label:
        problems.append("distill.teacher: distillation is for single-label models; unset data.multi_label")
    if config.data.streaming:
        problems.append("distill.teacher: the teacher's probabilities are computed up front; unset data.streaming")
    if config.train.class_weights != "none":
        problems.append("train.class_weights: the teacher's probabilities are the targets; set none")
    if config.train.label_smoothing > 0:
        problems.append("train.label_smoothing: the teacher's probabilities are already soft; set 0")
    if config.train.stack == "always":
        problems.append("train.stack: always is not done at the end of distillation (its training targets are the "
                        "teacher's); use auto and add a stack afterwards with `bertfit stack RUN`")
    return problems
