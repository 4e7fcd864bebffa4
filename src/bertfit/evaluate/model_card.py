"""The model card: model/README.md describing data, labels, hyper-parameters, metrics, limits and use.

Written from the run directory alone (config, results, evaluation), so it can be regenerated at
any time and always matches the files beside it.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from bertfit import artifacts
from bertfit.config import ModelConfig, RunConfig
from bertfit.errors import BertfitError
from bertfit.evaluate.card_facts import plan_lines, static_limit
from bertfit.evaluate.outputs import evaluation_folder
from bertfit.evaluate.report import (
    HEADLINE,
    MULTI_LABEL_HEADLINE,
    base_model_label,
    choose_evaluation,
    evaluation_label,
    load_evaluation,
    stack_name,
    training_test,
)
from bertfit.meta import ExportMeta, ModelMeta


def _metrics_table(evaluation: dict[str, Any]) -> list[str]:
    if "per_label" in evaluation:
        return _multi_label_table(evaluation)
    lines = _headline_rows(evaluation, HEADLINE)
    for name, scores in evaluation.get("baselines", {}).items():
        if "skipped" not in scores:
            lines.append(f"| {name} | " + " | ".join(f"{scores[k]:.4f}" for k in HEADLINE) + " |")
    return lines


def _headline_rows(evaluation: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The table's header and the fine-tuned model's row (and the stack's, where there is one) on `keys`."""
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
             "| **fine-tuned** | " + " | ".join(f"{evaluation[k]:.4f}" for k in keys) + " |"]
    if evaluation.get("stack"):
        stack = evaluation["stack"]["scores"]["stack"]
        lines.append(f"| **{stack_name(evaluation['stack']['model_weight'])}** | "
                     + " | ".join(f"{stack[k]:.4f}" if k in stack else "-" for k in keys) + " |")
    return lines


def _multi_label_table(evaluation: dict[str, Any]) -> list[str]:
    """A multi-label run's scores: the headline (exact-match accuracy, micro and macro F1), then each label."""
    lines = _headline_rows(evaluation, MULTI_LABEL_HEADLINE)
    lines += ["", "accuracy is exact match (the whole label set right). Each label is predicted when its probability "
              "reaches its threshold, tuned on validation:", "",
              "| label | threshold | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
    for name, scores in evaluation["per_label"].items():
        lines.append(f"| {name} | {scores['threshold']:.2f} | {scores['precision']:.4f} | {scores['recall']:.4f} "
                     f"| {scores['f1']:.4f} | {scores['support']} |")
    return lines


def card_evaluation(run_dir: Path, split: str = "test", data: str | None = None) -> str:
    """The evaluation the card reports: the run's own `split` when it has been evaluated (a report of other data leaves
    the card as it is), else the one a report of `data` shows (report.choose_evaluation)."""
    if (evaluation_folder(run_dir, split) / "metrics.json").is_file():
        return split
    return choose_evaluation(run_dir, data, split)


def command_path(run_dir: Path, config: RunConfig) -> str:
    """The run as the card's commands name it: OUTPUT_DIR/NAME as training wrote it, so they run as printed from
    where training ran; the path given when the run has moved since (or the card is written from elsewhere)."""
    trained = Path(config.output_dir) / config.name if config.name else None
    try:
        same = trained is not None and trained.exists() and trained.samefile(run_dir)
    except OSError:
        same = False
    return (trained if same else Path(run_dir)).as_posix()


def render_model_card(run_dir: str | Path, split: str = "test", data: str | None = None) -> Path:
    """Write RUN/model/README.md from the evaluation card_evaluation picks and return its path."""
    run_dir = Path(run_dir)
    config = artifacts.read_run_config(run_dir)
    evaluation = load_evaluation(run_dir, card_evaluation(run_dir, split, data))
    folder = artifacts.model_folder(run_dir)
    meta = artifacts.read_model_meta(folder)
    results = artifacts.read_results(run_dir)
    rows = results.get("rows", {})
    validated = _has_validation(config, rows)
    weakest = min(evaluation.get("per_class", evaluation.get("per_label", {})).items(), key=lambda item: item[1]["f1"])
    confused = evaluation["most_confused"][0] if evaluation.get("most_confused") else None
    train = config.train
    length = f"{train.max_steps} steps (train.max_steps)" if train.max_steps else f"epochs {train.epochs}"
    lines = [
        f"# {run_dir.name}", "",
        f"A text classifier fine-tuned with bertfit from `{base_model_label(config.model.name)}` "
        f"({len(meta.labels)} labels: {', '.join(meta.labels)}).", "",
        "## Intended use", "",
        f"Classifying short English texts like those in `{config.data.train}` into the labels above. "
        "Scores below hold for text from the same source; check on a sample before using it elsewhere.", "",
        *_loading_lines(command_path(run_dir, config), meta), "",
        "## Data", "",
        f"- train: `{config.data.train}` ({rows.get('train', '?')} rows used)",
        _validation_line(config, rows, validated),
        f"- evaluated on: {evaluation_label(evaluation)}", "",
        "## Hyper-parameters", "",
        f"- max_length {config.model.max_length}, pooling {config.model.pooling}, dropout {config.model.dropout}, "
        f"freeze {config.model.freeze}",
        f"- {length}, batch size {train.batch_size} x {train.grad_accum_steps} accumulation, lr {train.lr:g}, "
        f"weight decay {train.weight_decay}, warmup {train.warmup_ratio}, seed {train.seed}",
        f"- {_kept(config, results.get('best_step', meta.step), validated)}",
        *plan_lines(run_dir, command_path(run_dir, config)), "",
        f"## Metrics ({evaluation_label(evaluation)})", "", *_metrics_table(evaluation), "",
        *_training_test_lines(run_dir),
        _confidence_line(evaluation, meta, validated), "",
        "## Limits", "",
        f"- Weakest {'label' if meta.multi_label else 'class'} on the {evaluation['rows']} evaluated rows: {weakest[0]} "
        f"(F1 {weakest[1]['f1']:.3f}, support {weakest[1]['support']}).",
    ]
    lines += static_limit(results.get("static")) + _limit_lines(evaluation, confused, config, validated)
    export = artifacts.export_folder(run_dir)
    if export is not None:
        try:
            lines += export_card_lines(artifacts.read_export_meta(export))
        except BertfitError:
            pass  # a damaged export.json: the card still describes the model
    path = folder / "README.md"
    artifacts.write_text_atomic(path, "\n".join(lines))
    return path


def _training_test_lines(run_dir: Path) -> list[str]:
    """Training's own test figures on the whole test data: a later, smaller evaluation never hides them."""
    test = training_test(run_dir)
    if test is None:
        return []
    return [f"At the end of training, on the whole test data `{test['data']}` ({test['rows']} rows): "
            f"accuracy {test['accuracy']:.4f}, macro F1 {test['f1_macro']:.4f}.", ""]


def _confidence_line(evaluation: dict[str, Any], meta: ModelMeta, validated: bool) -> str:
    """What the probabilities mean: each label's threshold (multi-label), or the temperature and where it came from."""
    if meta.multi_label:
        return "Each label is predicted when its probability reaches its threshold (tuned on validation, table above)."
    temperature = evaluation.get("temperature", meta.temperature)
    if not validated:
        how = "not fitted: no validation rows"
    elif evaluation.get("calibration"):
        how = f"fitted on validation data: {evaluation['calibration']['fitted_on']}"
    else:
        how = "not refitted" + (f": {evaluation['calibration_skipped']}" if evaluation.get("calibration_skipped") else "")
    return f"Temperature T = {temperature:.3f} ({how}; applied by `Predictor`)."


def _loading_lines(run: str, meta: ModelMeta) -> list[str]:
    """How to load the model: bertfit, or Hugging Face transformers with the modelling code this folder ships; `run`
    is the run's path as the commands name it (command_path)."""
    folder = f"{run}/{artifacts.MODEL_DIR}"
    lines = ["## Loading it", "", f"bertfit: `bertfit predict {shlex.quote(run)} \"your text\"`, or "
             f"`Predictor({json.dumps(run)}).predict([...])` in Python.", ""]
    if meta.static:
        return lines + [f"A static student: token vectors and a linear head (`{meta.static}`) run in NumPy with the "
                        "`tokenizers` library; neither torch nor transformers is needed, and transformers cannot load it."]
    lines += ["Hugging Face transformers (this folder ships its modelling code, hence `trust_remote_code=True`; "
              "the probabilities are bertfit's, temperature included):", "", "```python",
              "from transformers import pipeline",
              f"classifier = pipeline(\"text-classification\", model={json.dumps(folder)}, trust_remote_code=True)",
              "classifier(\"your text\", top_k=None)", "```"]
    if meta.stack is not None:
        weight = meta.stack.model_weight
        lines += ["", f"bertfit's predictions (`predict`, `serve`, exports) come from a stacked ensemble: {weight:.2f} x "
                  f"this model's probabilities + {1 - weight:.2f} x a TF-IDF + logistic regression's (`{meta.stack.file}`), "
                  f"the weight chosen on validation {meta.stack.metric}. transformers gives the fine-tuned model alone."]
    if meta.adapter:
        lines.append(f"This run trained LoRA adapters: write a standalone folder with `bertfit merge {shlex.quote(run)} "
                     "OUT` and load OUT instead.")
    return lines


def _limit_lines(evaluation: dict[str, Any], confused: dict[str, Any] | None, config: RunConfig,
                 validated: bool) -> list[str]:
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
    multi_label = "per_label" in evaluation
    return lines + [_long_text_limit(config.model),
                    "- Labels outside the set above cannot be predicted; " + ("an input gets those whose probability "
                    "reaches their threshold, possibly none." if multi_label else "every input gets one of them."),
                    _confidence_limit(evaluation, multi_label, validated), ""]


def _confidence_limit(evaluation: dict[str, Any], multi_label: bool, validated: bool) -> str:
    """How far the probabilities can be read as probabilities: calibrated on validation, or only a ranking."""
    if multi_label:
        return "- Each label's threshold was tuned on the validation split only; under a shift in data the sets may change."
    if evaluation.get("calibration") or evaluation.get("temperature", 1.0) != 1.0:
        return "- Confidence is calibrated on the validation split only; under a shift in data it may be over-confident."
    why = evaluation.get("calibration_skipped") or ("no validation rows" if not validated else "no temperature fitted")
    return f"- Confidence is not calibrated ({why}): read the probabilities as a ranking."


def _long_text_limit(model: ModelConfig) -> str:
    """How the model reads a text longer than max_length (truncation, head+tail or sliding windows)."""
    if model.window_stride:  # 0 off; unset (None) before training chose it
        return (f"- Texts longer than {model.max_length} tokens are read in windows (stride {model.window_stride}) "
                f"whose logits are {model.window_pooling}-pooled; cost grows with text length.")
    if model.keep_head < 1:
        return (f"- Texts longer than {model.max_length} tokens keep their start and end "
                f"({model.keep_head:.0%} head); the middle is not read.")
    return f"- Texts longer than {model.max_length} tokens are truncated; only their start is read."


def export_card_lines(export: ExportMeta) -> list[str]:
    """The card's deployment section: exported variants against PyTorch, the machine, timings and the choice."""
    check = export.check or {}
    lines = ["## Deployment (`bertfit export`)", "",
             f"Checked on {check.get('rows', '?')} {'training' if str(check.get('split')).startswith('train ') else 'held-out'} "
             f"rows ({check.get('split', '?')}): PyTorch accuracy "
             f"{check.get('torch_accuracy', float('nan')):.2%}. Intervals are 95%.", "",
             "| variant | accuracy | change (points) | labels differing from PyTorch |", "|---|---|---|---|"]
    for variant in export.files:
        c = check.get(variant)
        if c is None:
            continue
        low, high = c.get("accuracy_change_interval_points", [None, None])
        spread = f" [{low:+.2f}, {high:+.2f}]" if low is not None else ""
        d_low, d_high = c.get("disagreement_interval", [None, None])
        disagreement = 1 - c["same_label_fraction"]
        interval = f" [{d_low:.2%}, {d_high:.2%}]" if d_low is not None else ""
        lines.append(f"| {variant} | {c['accuracy']:.2%} | {c['accuracy_change_points']:+.2f}{spread} "
                     f"| {disagreement:.2%}{interval} |")
    stack = export.model.stack
    if stack is not None:
        lines += ["", f"The run's stacked ensemble ({stack.model_weight:.2f} x model + {1 - stack.model_weight:.2f} x TF-IDF, "
                  f"`{stack.file}`) is exported with it and applied on every variant; the check above compares the "
                  "network's probabilities, the TF-IDF part being the same NumPy code everywhere."]
    lines.append("")
    selection = export.selection
    if selection is None:
        served = export.choice or export.default_variant()
        return lines + [f"Served by default on a CPU: **{served}** (no timing on this machine: `--target auto` measures).", ""]
    cpu, settings = selection["cpu"], selection["settings"]
    lines += [f"Timed on {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores; flags: {', '.join(cpu['flags']) or 'none'}; "
              f"int8 dot product: {'yes' if cpu['int8_dot_product'] else 'no'}), load average "
              f"{', '.join(map(str, selection['load_average']))}, {selection['date']}: batches of {settings['time_batch']}, "
              f"{settings['threads']} thread(s), {settings['time_rounds']} interleaved rounds of "
              f"{settings['time_rows']} texts.", "",
              "| candidate | texts/s (model only) | vs PyTorch |", "|---|---|---|"]
    for name, timing in selection["timings"].items():
        lines.append(f"| {name} | {timing['texts_per_second']:.1f} | {timing['vs_torch']:.2f}x |")
    lines += ["", *[f"- skipped {name}: {reason}" for name, reason in selection["skipped"].items()],
              f"Chosen: **{selection['choice']}**, the fastest whose accuracy is at most "
              f"{settings['max_accuracy_loss']} points below PyTorch's; `bertfit serve` and `predict` use it.", ""]
    return lines


def _has_validation(config: RunConfig, rows: dict[str, int]) -> bool:
    """Whether the run had validation rows: results.json counts them (a preset's own split validates even with
    data.validation_fraction 0); a run written before it counted rows is judged by its config."""
    return "validation" in rows if "train" in rows else not config.data.holds_out_none


def _validation_line(config: RunConfig, rows: dict[str, int], validated: bool) -> str:
    if not validated:
        return "- validation: none held out (data.validation_fraction 0): every labelled row trained the model"
    fraction = config.data.validation_fraction
    source = config.data.validation or (f"{fraction:.0%} of train, seeded split" if fraction
                                        else "the preset's validation split")
    return f"- validation: `{source}` ({rows.get('validation', '?')} rows)"


def _kept(config: RunConfig, step: int, validated: bool) -> str:
    """Which weights the run kept (training.loop)."""
    if not validated:
        return f"the last weights (step {step}): no validation split to choose on"
    if config.train.keep == "last":
        return (f"the last weights (step {step}), train.keep last (auto keeps them for a contrastive head and below "
                "100 validation rows, where the best evaluation is a lucky one)")
    return f"best checkpoint by validation {config.train.metric} (step {step})"
