"""The model card: model/README.md describing data, labels, hyper-parameters, metrics, limits and use.

Written from the run directory alone (config, results, evaluation), so it can be regenerated at
any time and always matches the files beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertfit import artifacts
from bertfit.config import ModelConfig, RunConfig
from bertfit.evaluate.report import HEADLINE, load_evaluation


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    lines = ["| model | " + " | ".join(HEADLINE) + " |", "|---" * (len(HEADLINE) + 1) + "|",
             "| **fine-tuned** | " + " | ".join(f"{evaluation[k]:.4f}" for k in HEADLINE) + " |"]
    for name, scores in evaluation.get("baselines", {}).items():
        if "skipped" not in scores:
            lines.append(f"| {name} | " + " | ".join(f"{scores[k]:.4f}" for k in HEADLINE) + " |")
    return lines


def render_model_card(run_dir: str | Path, split: str = "test") -> Path:
    """Write RUN/model/README.md and return its path."""
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    evaluation = load_evaluation(run_dir, split)
    folder = artifacts.model_folder(run_dir)
    meta = artifacts.read_model_meta(folder)
    results = artifacts.read_results(run_dir)
    rows = results.get("rows", {})
    weakest = min(evaluation["per_class"].items(), key=lambda item: item[1]["f1"])
    confused = evaluation["most_confused"][0] if evaluation["most_confused"] else None
    train = config.train
    lines = [
        f"# {run_dir.name}", "",
        f"A text classifier fine-tuned with bertfit from `{config.model.name}` "
        f"({len(meta.labels)} labels: {', '.join(meta.labels)}).", "",
        "## Intended use", "",
        f"Classifying short English texts like those in `{config.data.train}` into the labels above. "
        "Scores below hold for text from the same source; check on a sample before using it elsewhere.", "",
        "## Data", "",
        f"- train: `{config.data.train}` ({rows.get('train', '?')} rows used)",
        f"- validation: `{config.data.validation or _held_out(config.data.validation_fraction)}` "
        f"({rows.get('validation', '?')} rows)",
        f"- evaluated on: `{evaluation['data']}` ({evaluation['rows']} rows)", "",
        "## Hyper-parameters", "",
        f"- max_length {config.model.max_length}, pooling {config.model.pooling}, dropout {config.model.dropout}, "
        f"freeze {config.model.freeze}",
        f"- epochs {train.epochs}, batch size {train.batch_size} x {train.grad_accum_steps} accumulation, lr {train.lr}, "
        f"weight decay {train.weight_decay}, warmup {train.warmup_ratio}, seed {train.seed}",
        f"- best checkpoint by validation {train.metric} (step {results.get('best_step', meta.step)})", "",
        f"## Metrics ({split})", "", *_metrics_table(evaluation), "",
        f"Temperature T = {evaluation.get('temperature', 1.0):.3f} (fitted on validation data; applied by `Predictor`).", "",
        "## Limits", "",
        f"- Weakest class: {weakest[0]} (F1 {weakest[1]['f1']:.3f}, support {weakest[1]['support']}).",
    ]
    lines += _limit_lines(evaluation, confused, config)
    path = folder / "README.md"
    artifacts.write_text_atomic(path, "\n".join(lines))
    return path


def _limit_lines(evaluation: dict[str, Any], confused: dict[str, Any] | None, config: RunConfig) -> list[str]:
    """The card's remaining limits: confusions, baselines that match the model, overfitting, truncation."""
    lines = []
    if confused:
        lines.append(f"- Most frequent confusion: {confused['true']} read as {confused['predicted']} "
                     f"({confused['count']} rows, {confused['fraction_of_true']:.1%} of {confused['true']}).")
    for name, scores in evaluation.get("baselines", {}).items():
        if "skipped" not in scores and scores["accuracy"] >= evaluation["accuracy"]:
            lines.append(f"- The {name} baseline does at least as well (accuracy {scores['accuracy']:.3f} vs "
                         f"{evaluation['accuracy']:.3f}): this model is not worth its cost yet.")
    if evaluation.get("overfitting_warning"):
        lines.append(f"- Training: {evaluation['overfitting_warning']}.")
    return lines + [_long_text_limit(config.model),
                    "- Labels outside the set above cannot be predicted; every input gets one of them.",
                    "- Confidence is calibrated on the validation split only; under a shift in data it may be "
                    "over-confident.", ""]


def _long_text_limit(model: ModelConfig) -> str:
    """How the model reads a text longer than max_length (truncation, head+tail or sliding windows)."""
    if model.window_stride:  # 0 off; unset (None) before training chose it
        return (f"- Texts longer than {model.max_length} tokens are read in windows (stride {model.window_stride}) "
                f"whose logits are {model.window_pooling}-pooled; cost grows with text length.")
    if model.keep_head < 1:
        return (f"- Texts longer than {model.max_length} tokens keep their start and end "
                f"({model.keep_head:.0%} head); the middle is not read.")
    return f"- Texts longer than {model.max_length} tokens are truncated; only their start is read."


def _held_out(fraction: float | None) -> str:
    """A share of train, or (None) the validation split a preset brings."""
    return f"{fraction:.0%} of train, seeded split" if fraction else "the preset's validation split"
