"""Column settings travel through the audit: the corrected file keeps the user's columns, header and format,
field flags change what a RUN's audit reads, new runs go beside the audited run, and a review is never lost."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from bertfit.cli.main import main
from conftest import write_csv


def review_file(path: Path, decisions: dict[int, str]) -> Path:
    """A reviewed label_issues.csv: row number -> new label (the text column is optional)."""
    return write_csv(path, [(row, "", label) for row, label in decisions.items()], ("row", "text", "new_label"))


def config_for(train: Path, *flags: str):
    from bertfit.config import load_config

    return load_config(None, ["--data.train", str(train), *flags])


def test_a_tsv_without_header_keeps_its_layout(tmp_path, ag_news_rows):
    """Columns by number (label, title, body) and no header row: the corrected file reads with the same settings."""
    from bertfit.curate.folds import read_training_rows
    from bertfit.curate.relabel import apply_review

    rows = [(label, text[:20], text[20:]) for text, label in ag_news_rows[:12]]
    with open(tmp_path / "train.tsv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file, delimiter="\t").writerows(rows)
    config = config_for(tmp_path / "train.tsv", "--data.header", "false", "--data.text_columns", '["1", "2"]',
                        "--data.label_column", '"0"')
    other = next(label for label, _, _ in rows if label != rows[2][0])
    relabelling = apply_review(config, review_file(tmp_path / "review.csv", {3: other, 5: "DROP"}), tmp_path / "audit",
                               "fixed")
    assert relabelling.train_file == tmp_path / "audit" / "fixed" / "train_relabelled.tsv"
    with open(relabelling.train_file, newline="", encoding="utf-8") as file:
        written = [tuple(row) for row in csv.reader(file, delimiter="\t")]
    assert written == [(other, *row[1:]) if i == 2 else row for i, row in enumerate(rows) if i != 4]
    assert relabelling.config.data.text_columns == ("1", "2") and relabelling.config.data.header is False
    assert len(read_training_rows(relabelling.config)) == 11


def test_jsonl_keeps_every_column_and_label_map_rows_keep_their_numbers(tmp_path):
    """Rows data.label_map drops are not read, yet the audit's row numbers are those of the file, and the
    corrected file keeps them (the same map drops them again) and every column, types included."""
    from bertfit.curate.folds import read_training_rows
    from bertfit.curate.relabel import apply_review

    records = [{"id": i, "body": f"text number {i}", "tag": tag} for i, tag in enumerate(["a", "junk", "b", "a", "b"])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = config_for(tmp_path / "train.jsonl", "--data.text_columns", "[body]", "--data.label_column", "tag",
                        "--data.label_map", "{junk: null}")
    rows = read_training_rows(config)
    assert rows.source_rows == (1, 3, 4, 5) and rows.texts[1] == "text number 2"
    relabelling = apply_review(config, review_file(tmp_path / "review.csv", {3: "a"}), tmp_path / "audit", "fixed")
    written = [json.loads(line) for line in relabelling.train_file.read_text().splitlines()]
    assert written == [{**r, "tag": "a"} if r["id"] == 2 else r for r in records]
    assert [(c["row"], c["given_label"], c["new_label"]) for c in csv.DictReader(relabelling.changes_file.open())] == \
        [("3", "b", "a")]
    with pytest.raises(Exception, match="row 2 is outside the training data \\(data.label_map drops it\\)"):
        apply_review(config, review_file(tmp_path / "review.csv", {2: "a"}), tmp_path / "audit", "again")


@pytest.fixture
def titled_run(tmp_path, tiny_overrides, ag_news_rows) -> Path:
    """A tiny run on `title,body,topic` (the text split in two) with a test file of the same columns."""
    rows = [(text[:30], text[30:], label) for text, label in ag_news_rows[:90]]
    write_csv(tmp_path / "train.csv", rows, ("title", "body", "topic"))
    write_csv(tmp_path / "test.csv", [(t[:30], t[30:], label) for t, label in ag_news_rows[300:330]], ("title", "body", "topic"))
    assert main(["train", *tiny_overrides, "--data.train", str(tmp_path / "train.csv"), "--data.test", str(tmp_path / "test.csv"),
                 "--data.text_columns", "[title, body]", "--data.label_column", "topic", "--name", "base", "--quiet"]) == 0
    return tmp_path / "runs" / "base"


def test_a_copied_run_relabels_beside_the_copy_with_field_flags(titled_run, tmp_path, capsys):
    """A run moved elsewhere: the relabelled run goes beside it (not to the output_dir it was made with),
    field flags change the audited run's config (here the new run's epochs), and the new run reads its
    test file with the run's columns."""
    copy = tmp_path / "shelf" / "base"
    shutil.copytree(titled_run, copy)
    capsys.readouterr()
    assert main(["audit", str(copy), "--data.text_columns", "[title]", "--folds", "3", "--quiet"]) == 0
    issues = list(csv.DictReader((copy / "audit" / "label_issues.csv").open()))
    titles = {t.strip() for t, _, _ in csv.reader((tmp_path / "train.csv").open())}
    assert issues and all(issue["text"] in titles for issue in issues)  # --data.text_columns read titles only
    review = review_file(tmp_path / "review.csv", {1: "DROP"})
    assert main(["audit", str(copy), "--relabel", str(review), "--train.epochs", "2", "--quiet"]) == 0, capsys.readouterr().err
    new_run = tmp_path / "shelf" / "base-relabelled"
    assert not (tmp_path / "runs" / "base-relabelled").exists()
    results = json.loads((new_run / "results.json").read_text())
    assert "test" in results and "epochs: 2" in (new_run / "config.yaml").read_text()
    with open(copy / "audit" / "base-relabelled" / "train_relabelled.csv", newline="", encoding="utf-8") as file:
        assert next(csv.reader(file)) == ["title", "body", "topic"]


def test_a_filled_in_review_is_not_overwritten_by_a_new_audit(titled_run, tmp_path, capsys):
    assert main(["audit", str(titled_run), "--folds", "3", "--quiet"]) == 0
    issues_file = titled_run / "audit" / "label_issues.csv"
    issues = list(csv.DictReader(issues_file.open()))
    issues[0]["new_label"] = "DROP"
    with open(issues_file, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, list(issues[0]))
        writer.writeheader()
        writer.writerows(issues)
    reviewed = issues_file.read_bytes()
    capsys.readouterr()
    assert main(["audit", str(titled_run), "--folds", "3"]) == 2
    assert "1 rows have new_label filled in" in capsys.readouterr().err and issues_file.read_bytes() == reviewed
    assert main(["audit", str(titled_run), "--relabel", str(issues_file), "--quiet"]) == 0
    assert (titled_run / "audit" / "base-relabelled" / "reviewed.csv").read_bytes() == reviewed
    assert main(["audit", str(titled_run), "--folds", "3", "--quiet"]) == 0  # applied: a new audit may replace it
    # a second relabel under a name already taken is refused before it writes anything
    assert main(["audit", str(titled_run), "--relabel", str(issues_file), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["topic", "0", "yes", "a: b", "null", ("title", "body"), ("1",), True, ("Sci/Tech", "World")])
def test_printed_flag_values_read_back_as_the_value(value):
    from bertfit.cli.curate import flag_value
    from bertfit.config_values import parse_overrides

    [(_, parsed)] = parse_overrides(["--data.x", flag_value(value)])
    assert parsed == (list(value) if isinstance(value, tuple) else value)
