"""One self-contained HTML page per run (`bertfit report RUN`) and side by side (`bertfit compare`).

The page reads what `evaluate_run` wrote (RUN/eval/<name>/: the run's own split, or other data's name) and embeds
the figures as base64, so the single .html file can be mailed or archived without its folder. The run's own
evaluation goes to RUN/report.html, one of other data to RUN/report-<name>.html.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from bertfit import artifacts
from bertfit.config import EMBEDDED_HUB_NAME, EMBEDDED_MODEL, config_to_dict, flatten
from bertfit.errors import BertfitError
from bertfit.evaluate.html import embed_png, page, read_csv, table
from bertfit.evaluate.outputs import evaluation_folder, evaluations, find_evaluation, missing_evaluation, own_data

log = logging.getLogger(__name__)

HEADLINE = ("accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro", "loss", "ece")
MULTI_LABEL_HEADLINE = ("accuracy", "f1_micro", "f1_macro", "precision_micro", "recall_micro", "precision_macro",
                        "recall_macro", "loss")


def base_model_label(name: str) -> str:
    """The base model as a reader knows it: the embedded model's hub name, else model.name as given."""
    return f"{EMBEDDED_HUB_NAME} (embedded)" if name == EMBEDDED_MODEL else name


def evaluation_label(evaluation: dict[str, Any]) -> str:
    """Where an evaluation's figures come from: data, split and rows, saying so when they are a slice."""
    rows, total = evaluation["rows"], evaluation.get("source_rows", evaluation["rows"])
    counted = f"first {rows} of {total} rows (a slice)" if rows < total else f"{rows} rows"
    return f"{evaluation['data']}, split {evaluation.get('split', 'test')}, {counted}"


def training_test(run_dir: Path) -> dict[str, Any] | None:
    """The test figures training measured with the best model on the whole test data (results.json), labelled."""
    results = artifacts.read_results(run_dir)
    if not results.get("test"):
        return None
    config = artifacts.read_run_config(run_dir)
    data = config.data.test or f"{config.data.train} (its test split)"
    return {"data": data, "rows": results.get("rows", {}).get("test", "?"), **results["test"]}


def load_evaluation(run_dir: Path, name: str = "test") -> dict[str, Any]:
    """The metrics.json of the evaluation `name` (a split, or other data's name: see evaluate.outputs)."""
    path = evaluation_folder(run_dir, name) / "metrics.json"
    if not path.is_file():
        raise missing_evaluation(Path(run_dir), name)
    return json.loads(path.read_text(encoding="utf-8"))


def baseline_rows(evaluation: dict[str, Any]) -> list[list[Any]]:
    """Fine-tuned first, then each baseline with the fine-tuned model's margin over it."""
    rows = [["fine-tuned", *(evaluation.get(k, "") for k in HEADLINE), ""]]
    if evaluation.get("stack"):  # what predict and serve give, scored on the same rows
        stack, weight = evaluation["stack"]["scores"]["stack"], evaluation["stack"]["model_weight"]
        rows.append([stack_name(weight), *(stack.get(k, "") for k in HEADLINE),
                     f"{evaluation['accuracy'] - stack['accuracy']:+.4f}"])
    for name, scores in evaluation.get("baselines", {}).items():
        if "skipped" in scores:
            rows.append([name, *([""] * len(HEADLINE)), f"skipped: {scores['skipped']}"])
            continue
        margin = evaluation["accuracy"] - scores["accuracy"]
        rows.append([name, *(scores.get(k, "") for k in HEADLINE), f"{margin:+.4f}"])
    return rows


def stack_name(model_weight: float) -> str:
    return f"stack: {model_weight:.2f} x fine-tuned + {1 - model_weight:.2f} x TF-IDF (served)"


def choose_evaluation(run_dir: Path, data: str | None = None, split: str = "test") -> str:
    """Which evaluation a report shows: that of `data` (as given to evaluate, or an evaluation's name), else the run's
    own `split`; a run with no data of its own for the split shows its most recent evaluation of other data."""
    if data is not None:
        return find_evaluation(run_dir, data, split)
    if not (evaluation_folder(run_dir, split) / "metrics.json").is_file():
        found = evaluations(run_dir)
        if found and own_data(artifacts.read_run_config(run_dir), split) is None:
            log.info("%s has no %s data of its own: reporting its most recent evaluation, %s", run_dir, split, found[0])
            return found[0]
    return split


def report_path(run_dir: Path, name: str, split: str = "test") -> Path:
    """RUN/report.html for the evaluation asked for by split, RUN/report-<name>.html for one of other data."""
    return Path(run_dir) / ("report.html" if name == split else f"report-{name}.html")


def render_report(run_dir: str | Path, split: str = "test", explain_errors: int = 5, out: Path | None = None,
                  data: str | None = None) -> Path:
    """Write the page of one evaluation (choose_evaluation) to `out` (default: report_path) and return its path."""
    run_dir = Path(run_dir)
    name = choose_evaluation(run_dir, data, split)
    evaluation = load_evaluation(run_dir, name)
    folder = evaluation_folder(run_dir, name)
    config = artifacts.read_run_config(run_dir)
    sections = [f"<h1>bertfit report: {html.escape(run_dir.name)}</h1>",
                f"<p>Base model {html.escape(base_model_label(config.model.name))}. Evaluated on "
                f"{html.escape(evaluation_label(evaluation))} (eval/{html.escape(name)}).</p>"]
    at_training = training_test(run_dir)
    if at_training:
        sections.append(f"<p>At the end of training, on the whole test data ({html.escape(str(at_training['data']))}, "
                        f"{at_training['rows']} rows): accuracy {at_training['accuracy']:.4f}, "
                        f"macro F1 {at_training['f1_macro']:.4f}.</p>")
    if evaluation.get("overfitting_warning"):
        sections.append(f'<p class="warn"><b>Warning:</b> {html.escape(evaluation["overfitting_warning"])}</p>')
    if "per_label" in evaluation:
        sections += _multi_label_sections(evaluation, folder)
    else:
        sections += _single_label_sections(evaluation, folder)
        sections += _errors_section(run_dir, folder, explain_errors)
    sections += _audit_section(run_dir / artifacts.AUDIT_DIR)
    sections += ["<h2>Hyper-parameters</h2>",
                 f"<pre>{html.escape(yaml.safe_dump(config_to_dict(config), sort_keys=False))}</pre>"]
    out = Path(out) if out else report_path(run_dir, name, split)
    artifacts.write_text_atomic(out, page(f"bertfit report {run_dir.name}", sections))
    return out


def _single_label_sections(evaluation: dict[str, Any], folder: Path) -> list[str]:
    """Baselines, calibration, per-class scores, confused pairs and the figures of a single-label evaluation."""
    sections = ["<h2>Fine-tuned vs baselines</h2>",
                table(["model", *HEADLINE, "accuracy margin of fine-tuned"], baseline_rows(evaluation))]
    sections += _calibration_section(evaluation)
    per_class = evaluation["per_class"]
    return sections + ["<h2>Per class</h2>", table(["class", "precision", "recall", "f1", "support"],
                                                   [[n, s["precision"], s["recall"], s["f1"], s["support"]]
                                                    for n, s in per_class.items()]),
                       "<h2>Most confused pairs</h2>",
                       table(["true", "predicted as", "rows", "share of true class"],
                             [[p["true"], p["predicted"], p["count"], p["fraction_of_true"]]
                              for p in evaluation["most_confused"]], 2),
                       "<h2>Training curves</h2>", embed_png(folder / "curves.png"),
                       "<h2>Confusion matrix</h2>", embed_png(folder / "confusion.png"),
                       "<h2>Reliability</h2>", embed_png(folder / "reliability.png")]


def _multi_label_sections(evaluation: dict[str, Any], folder: Path) -> list[str]:
    """A multi-label evaluation: headline (and the stack's), each label at its threshold, wrong label sets, figures."""
    rows = [["fine-tuned", *(evaluation.get(k, "") for k in MULTI_LABEL_HEADLINE)]]
    if evaluation.get("stack"):
        stack = evaluation["stack"]["scores"]["stack"]
        rows.append([stack_name(evaluation["stack"]["model_weight"]), *(stack.get(k, "") for k in MULTI_LABEL_HEADLINE)])
    labels = [[name, s["threshold"], s["precision"], s["recall"], s["f1"], s["support"], s["true_positives"],
               s["false_positives"], s["false_negatives"]] for name, s in evaluation["per_label"].items()]
    errors = read_csv(folder / "errors.csv", 20)
    return ["<h2>Multi-label scores</h2><p>accuracy is exact match: the whole label set right. Each label is predicted "
            "when its probability reaches its threshold (tuned on validation).</p>",
            table(["model", *MULTI_LABEL_HEADLINE], rows),
            "<h2>Per label</h2>", table(["label", "threshold", "precision", "recall", "f1", "support", "true positives",
                                         "false positives", "false negatives"], labels),
            embed_png(folder / "per_label.png"),
            f"<h2>Wrong label sets ({evaluation['wrong_sets']} rows, first {len(errors)})</h2>",
            table(["row", "text", "true", "predicted", "missed", "added"],
                  [[e["row"], e["text"][:300], e["true"], e["predicted"], e["missed"], e["added"]] for e in errors], 6)
            if errors else "<p>Every row's label set was predicted exactly.</p>",
            "<h2>Training curves</h2>", embed_png(folder / "curves.png")]


def _calibration_section(evaluation: dict[str, Any]) -> list[str]:
    calibration = evaluation.get("calibration")
    if not calibration:
        why = evaluation.get("calibration_skipped")
        return ["<h2>Calibration</h2>", f"<p>Temperature {evaluation.get('temperature', 1.0):.3f} (not refitted"
                + (f": {html.escape(why)}" if why else "") + ").</p>"]
    rows = [[shown, calibration[f"{split}_ece_before"], calibration[f"{split}_ece_after"],
             calibration[f"{split}_loss_before"], calibration[f"{split}_loss_after"]]
            for split, shown in (("validation", "validation"), ("test", "evaluated rows"))]
    return ["<h2>Calibration (temperature scaling)</h2>",
            f"<p>T = {calibration['temperature']:.3f}, fitted on {html.escape(calibration['fitted_on'])}; "
            "stored in model/bertfit.json and applied by Predictor.</p>",
            table(["rows", "ECE before", "ECE after", "loss before", "loss after"], rows)]


def _errors_section(run_dir: Path, folder: Path, explain_errors: int) -> list[str]:
    errors = read_csv(folder / "errors.csv", 20)
    if not errors:
        return ["<h2>Errors</h2><p>No misclassified rows.</p>"]
    rows = [[e["row"], e["text"][:300], e["true"], e["predicted"], float(e["confidence"])] for e in errors]
    parts = ["<h2>Most confident errors</h2>", table(["row", "text", "true", "predicted", "confidence"], rows, 4)]
    if explain_errors > 0 and artifacts.read_model_meta(run_dir).static is None:  # a static student has no gradients
        from bertfit.evaluate.explain import attribution_html, integrated_gradients, special_tokens_of

        loaded = artifacts.load_model(run_dir)
        parts.append(f"<h2>Why: token attributions of the top {min(explain_errors, len(errors))} errors</h2>"
                     "<p>Integrated gradients towards the predicted (wrong) label.</p>")
        for error in errors[:explain_errors]:
            attribution = integrated_gradients(loaded, error["text"])
            parts.append(f"<p>row {html.escape(error['row'])}, true <b>{html.escape(error['true'])}</b></p>"
                         + attribution_html(attribution, special_tokens_of(loaded)))
    return parts


def _audit_section(folder: Path, limit: int = 20) -> list[str]:
    """What `bertfit audit RUN` found, when it was run: likely label errors and conflicting near-duplicates."""
    if not (folder / artifacts.AUDIT_SUMMARY).is_file():
        return []
    found = json.loads((folder / artifacts.AUDIT_SUMMARY).read_text(encoding="utf-8"))
    settings = found["settings"]
    parts = ["<h2>Data audit: likely label errors</h2>",
             f"<p>{found['rows']} training rows, {settings['folds']}-fold out-of-fold probabilities ({settings['method']}), "
             f"confident learning (cleanlab): <b>{found['label_issues']}</b> likely label errors, "
             f"<b>{found['conflicting_pairs']}</b> near-duplicate pairs with conflicting labels; out-of-fold accuracy "
             f"against the given labels {found['out_of_fold_accuracy']:.4f}. Review {artifacts.AUDIT_ISSUES} and apply it "
             "with <code>bertfit audit RUN --relabel FILE</code>.</p>"]
    issues = read_csv(folder / artifacts.AUDIT_ISSUES, limit)
    if issues:
        parts.append(table(["row", "text", "given", "suggested", "score"],
                           [[r["row"], r["text"][:300], r["given_label"], r["suggested_label"], float(r["score"])]
                            for r in issues], 4))
    conflicts = read_csv(folder / artifacts.AUDIT_CONFLICTS, limit // 2)
    if conflicts:
        parts += ["<h3>Near-duplicates labelled differently</h3>",
                  table(["rows", "labels", "text a", "text b", "similarity"],
                        [[f"{r['row_a']}, {r['row_b']}", f"{r['label_a']} / {r['label_b']}", r["text_a"][:200],
                          r["text_b"][:200], float(r["similarity"])] for r in conflicts], 4)]
    return parts


def render_compare(run_dirs: list[str | Path], out: Path, split: str = "test", data: str | None = None) -> Path:
    """Runs side by side: headline metrics (of each run's evaluation chosen as report chooses it), hyper-parameters
    (differences first, highlighted), curves."""
    from bertfit.evaluate.plots import compare_curves_png

    runs = [Path(r) for r in run_dirs]
    if len(runs) < 2:
        raise BertfitError("compare needs at least two run directories")
    names = [r.name if list(map(lambda x: x.name, runs)).count(r.name) == 1 else str(r) for r in runs]
    evaluations = [load_evaluation(r, choose_evaluation(r, data, split)) for r in runs]
    shown = [m for m in dict.fromkeys(HEADLINE + MULTI_LABEL_HEADLINE) if any(m in e for e in evaluations)]
    metric_rows = [["evaluated on", *(evaluation_label(e) for e in evaluations)],
                   *([metric, *(e.get(metric, "") for e in evaluations)] for metric in shown)]
    at_training = [training_test(r) for r in runs]
    metric_rows.append(["test accuracy at training (whole test data)",
                        *(f"{t['accuracy']:.4f} ({t['rows']} rows)" if t else "" for t in at_training)])
    metric_rows.append(["temperature", *(e.get("temperature", "") for e in evaluations)])
    params = [flatten(config_to_dict(artifacts.read_run_config(r))) for r in runs]
    keys = [k for k in params[0] if k not in ("name", "output_dir", "cache_dir")]
    differing = [k for k in keys if len({json.dumps(p.get(k)) for p in params}) > 1]
    same = [k for k in keys if k not in differing]
    param_html = table(["field", *names], [[k, *(_param(p.get(k)) for p in params)] for k in differing + same])
    # Mark the rows that differ: the first len(differing) data rows of the table.
    param_html = param_html.replace("<tr><td class=t>", '<tr class="diff"><td class=t>', len(differing))
    curves = compare_curves_png({n: artifacts.read_metrics(r) for n, r in zip(names, runs)}, Path(out).with_suffix(".png"))
    sections = [f"<h1>bertfit compare: {len(runs)} runs</h1>",
                f"<h2>Metrics ({html.escape(data or split)})</h2>", table(["metric", *names], metric_rows),
                "<h2>Validation curves</h2>", embed_png(curves),
                f"<h2>Hyper-parameters ({len(differing)} differ, highlighted)</h2>", param_html]
    artifacts.write_text_atomic(Path(out), page("bertfit compare", sections))
    return Path(out)


def _param(value: Any) -> Any:
    """A config value as written: floats in full general format (3e-05, 0.0001), never rounded to a few decimals."""
    return f"{value:g}" if isinstance(value, float) else value
