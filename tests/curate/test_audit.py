"""bertfit audit: flipped labels are found, a reviewed CSV round-trips through --relabel, bad input is refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bertfit.cli.main import main
from conftest import write_csv

NAMES = ["World", "Sports", "Business", "Sci/Tech"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def flipped(rows: list[tuple[str, str]], every: int) -> tuple[list[tuple[str, str]], set[int]]:
    """The rows with every `every`-th label moved to the next class; the 1-based row numbers changed."""
    out, changed = [], set()
    for index, (text, label) in enumerate(rows):
        if index % every == every - 1:
            label = NAMES[(NAMES.index(label) + 1) % len(NAMES)]
            changed.add(index + 1)
        out.append((text, label))
    return out, changed


@pytest.mark.e2e
def test_audit_finds_deliberately_flipped_rows(tmp_path, ag_news_rows, capsys):
    """240 real AG News rows, 12 labels flipped: the embedded model's frozen features + cleanlab rank them first."""
    rows, changed = flipped(ag_news_rows[:240], every=20)
    train = write_csv(tmp_path / "train.csv", rows)
    code = main(["audit", "--data.train", str(train), "--cache_dir", str(tmp_path / "cache"), "--out", str(tmp_path / "audit"),
                 "--folds", "4", "--model.max_length", "64", "--quiet"])
    assert code == 0, capsys.readouterr().err
    issues = read_csv(tmp_path / "audit" / "label_issues.csv")
    flagged = [int(r["row"]) for r in issues]
    assert len(set(flagged) & changed) >= 0.75 * len(changed)  # recall
    # ranked: the first 24 of 240 rows hold at least half of the 12 flips (at random they would hold about 1)
    assert len(set(flagged[:2 * len(changed)]) & changed) >= 0.5 * len(changed)
    scores = [float(r["score"]) for r in issues]
    assert scores == sorted(scores)  # most likely errors first
    for issue in issues:
        row = int(issue["row"])
        assert issue["text"] == rows[row - 1][0].strip() and issue["given_label"] == rows[row - 1][1]
        assert issue["suggested_label"] != issue["given_label"] and issue["new_label"] == ""
    flip_suggestions = {int(r["row"]): r["suggested_label"] for r in issues if int(r["row"]) in changed}
    truth = {i + 1: label for i, (_, label) in enumerate(ag_news_rows[:240])}
    assert sum(truth[row] == label for row, label in flip_suggestions.items()) >= 0.75 * len(flip_suggestions)
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert summary["rows"] == 240 and summary["label_issues"] == len(issues) and summary["out_of_fold_accuracy"] > 0.7


def test_conflicting_duplicates_are_listed(tmp_path, tiny_model_dir, ag_news_rows):
    from bertfit.config import load_config
    from bertfit.curate.audit import AuditSettings, audit

    rows = list(ag_news_rows[:60])
    text, label = rows[3]
    rows += [(f"  {text.upper()}!! ", NAMES[(NAMES.index(label) + 1) % 4]), (text, label)]  # a conflict, an agreeing copy
    config = load_config(None, ["--data.train", str(write_csv(tmp_path / "t.csv", rows)), "--model.name", str(tiny_model_dir),
                                "--model.max_length", "32", "--cache_dir", str(tmp_path / "cache")])
    result = audit(config, tmp_path / "audit", AuditSettings(folds=2, similarity=1.0))
    pairs = read_csv(tmp_path / "audit" / "conflicts.csv")
    same_text = [(int(p["row_a"]), int(p["row_b"])) for p in pairs if p["match"] == "same text"]
    assert same_text == [(4, 61), (61, 62)]
    assert result.conflicts == len(pairs) and result.rows == 62


def test_reviewed_csv_round_trips_through_relabel(tmp_path, tiny_model_dir, tiny_overrides, ag_news_rows, capsys):
    """Audit a run, review its label_issues.csv (relabel, drop, keep), relabel: the changes and nothing else."""
    rows = ag_news_rows[:120]
    train = write_csv(tmp_path / "train.csv", rows)
    assert main(["train", *tiny_overrides, "--data.train", str(train), "--name", "base", "--quiet"]) == 0
    run = tmp_path / "runs" / "base"
    assert main(["audit", str(run), "--folds", "3", "--quiet"]) == 0
    issues = read_csv(run / "audit" / "label_issues.csv")
    assert main(["evaluate", str(run), "--data", str(train), "--max-rows", "40", "--no-calibrate", "--no-baselines",
                 "--no-figures"]) == 0
    assert main(["report", str(run), "--explain-errors", "0"]) == 0  # the report shows what the audit found
    [page] = [p.read_text() for p in run.glob("report*.html")]  # named after the evaluated data
    assert "Data audit: likely label errors" in page and f"<b>{len(issues)}</b> likely label errors" in page
    other = NAMES[(NAMES.index(rows[4][1]) + 1) % 4]
    review = [{**r, "new_label": ""} for r in issues if r["row"] not in ("5", "9", "11")]  # kept as given
    review += [{"row": "5", "text": rows[4][0], "new_label": other},  # relabelled
               {"row": "9", "text": "", "new_label": "DROP"},  # dropped (the text is optional)
               {"row": "11", "text": rows[10][0], "new_label": rows[10][1]}]  # confirmed: no change
    reviewed = tmp_path / "reviewed.csv"
    with open(reviewed, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, ["row", "text", "given_label", "suggested_label", "score", "new_label"])
        writer.writeheader()
        writer.writerows(review)
    capsys.readouterr()
    assert main(["audit", str(run), "--relabel", str(reviewed), "--name", "fixed", "--quiet"]) == 0
    assert "relabelled 1 rows, dropped 1, confirmed 1" in capsys.readouterr().out
    changes = read_csv(run / "audit" / "fixed" / "changes.csv")
    assert [(c["row"], c["given_label"], c["new_label"]) for c in changes] == \
        [("5", rows[4][1], other), ("9", rows[8][1], "DROP")]
    corrected = read_csv(run / "audit" / "fixed" / "train_relabelled.csv")
    expected = [(t, other if i == 4 else label) for i, (t, label) in enumerate(rows) if i != 8]  # the file's rows as written
    assert [(r["text"], r["label"]) for r in corrected] == expected
    fixed = tmp_path / "runs" / "fixed"
    assert json.loads((fixed / "results.json").read_text())["rows"]["train"] + \
        json.loads((fixed / "results.json").read_text())["rows"]["validation"] == 119


@pytest.mark.parametrize("content, message", [
    ("row,text,new_label\n7,not the text of row 7,World\n", "line 2: its text differs from row 7"),
    ("row,text,new_label\n700,,World\n", "line 2: row 700 is outside the training data (60 rows)"),
    ("row,text,new_label\n3,,Weather\n", "line 2: new_label 'Weather' is not a label"),
    ("row,text,new_label\n3,,World\n3,,DROP\n", "line 3: row 3 is reviewed twice"),
    ("row,text\n3,x\n", "column(s) new_label not found"),
])
def test_bad_reviews_are_refused_with_one_line(tmp_path, ag_news_rows, content, message, capsys):
    train = write_csv(tmp_path / "train.csv", ag_news_rows[:60])
    (tmp_path / "review.csv").write_text(content)
    assert main(["audit", "--data.train", str(train), "--relabel", str(tmp_path / "review.csv"),
                 "--out", str(tmp_path / "audit")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list((tmp_path / "audit").rglob("train_relabelled.csv"))


def test_too_few_rows_per_class_for_the_folds(tmp_path, capsys):
    rows = [(f"text {i}", "a") for i in range(10)] + [("odd one", "b"), ("another", "b")]
    train = write_csv(tmp_path / "train.csv", rows)
    assert main(["audit", "--data.train", str(train), "--folds", "5"]) == 2
    err = capsys.readouterr().err
    assert "--folds: 5-fold cross-fitting needs >= 5 rows per class;" in err and "too few ('b' has 2)" in err
    assert err.count("\n") == 1


def test_finetune_method_scores_every_row_with_a_run_that_never_saw_it(tmp_path, tiny_overrides, ag_news_rows):
    from bertfit.config import load_config
    from bertfit.curate.audit import AuditSettings, audit

    train = write_csv(tmp_path / "train.csv", ag_news_rows[:60])
    config = load_config(None, [*tiny_overrides, "--data.train", str(train), "--model.max_length", "32"])
    result = audit(config, tmp_path / "audit", AuditSettings(folds=2, method="finetune"))
    assert result.probabilities.shape == (60, 4) and (result.probabilities.sum(axis=1) > 0.999).all()
    assert not list((tmp_path / "audit").glob(".folds-*"))  # the fold runs are scratch, removed afterwards
    assert (tmp_path / "audit" / "label_issues.csv").is_file() and not (tmp_path / "runs").exists()
