"""The curation loop as a user walks it, on data whose columns are not `text` and `label`: AG News as
`title,body,topic` with label names. Every command a step prints is run as printed (shlex.split, then
`bertfit.cli.main.main`), in the folder the user is in."""

from __future__ import annotations

import csv
import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bertfit.cli.main import main
from conftest import headline_rows, read_csv, tiny_flags, write_csv

NAMES = ["World", "Sports", "Business", "Sci/Tech"]
HEADER = ("title", "body", "topic")
# Appended to a printed `train` from a few dozen rows, where the defaults would train ~150 steps: the printed
# part (model, columns, files) is what is tested; these only shorten the run and keep it off ~/.cache.
SHORT_RUN = ["--train.max_steps", "4", "--train.tensorboard", "false", "--train.progress", "false"]


def write_records(path: Path, records: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def printed_commands(out: str) -> list[list[str]]:
    """The commands a step printed for the user to run next: from `bertfit` to the end of the line (or to a
    parenthesised aside), on lines that do not quote a command in backticks."""
    found = (re.search(r"\bbertfit [a-z]+\b.*?(?=\s+\(|$)", line) for line in out.splitlines() if "`" not in line)
    return [shlex.split(match.group()) for match in found if match]


def run_review_briefly(command: list[str]) -> dict:
    """A printed `bertfit review` started as the user would (a process of its own, in this folder), asked for its
    queues once it answers, then stopped: the page it serves is tested in tests/deploy/test_review_browser.py."""
    assert command[:2] == ["bertfit", "review"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "bertfit", *command[1:], "--port", str(port), "--no-explain"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"{shlex.join(command)} stopped: {process.stderr.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2) as answer:
                    return json.load(answer)["queues"]
            except OSError:
                assert time.monotonic() < deadline, f"{shlex.join(command)} did not answer"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=20)


def run_printed(command: list[str], capsys, *extra: str) -> str:
    """Run a printed command through the CLI entry point; its output, after asserting it succeeded."""
    assert command[0] == "bertfit"
    code = main([*command[1:], *extra])
    captured = capsys.readouterr()
    assert code == 0, f"{shlex.join(command)} failed:\n{captured.err}"
    return captured.out


@pytest.fixture
def news_run(tmp_path, tiny_model_dir, monkeypatch, capsys) -> Path:
    """A tiny run trained in tmp_path (the user's folder) on train.csv `title,body,topic` with test.csv beside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERTFIT_CACHE", str(tmp_path / "cache"))
    write_csv(tmp_path / "train.csv", headline_rows(0, 120), HEADER)
    write_csv(tmp_path / "test.csv", headline_rows(120, 160), HEADER)
    flags = [flag.replace(str(tmp_path) + "/", "") for flag in tiny_flags(tiny_model_dir, tmp_path)]  # runs/, relative
    assert main(["train", *flags, "--data.train", "train.csv", "--data.test", "test.csv", "--data.text_columns",
                 "[title, body]", "--data.label_column", "topic", "--name", "news", "--quiet"]) == 0
    capsys.readouterr()
    return Path("runs/news")


def test_train_audit_review_relabel_and_audit_again(news_run, tmp_path, capsys):
    out = run_printed(["bertfit", "audit", str(news_run), "--folds", "3", "--quiet"], capsys)
    [relabel, browse] = printed_commands(out)
    review = Path(relabel[relabel.index("--relabel") + 1])
    assert review == news_run / "audit" / "label_issues.csv"
    # the reviewer opens the file, relabels two rows, drops one, and saves it in place
    issues = read_csv(review)
    assert len(issues) >= 3
    assert run_review_briefly(browse)["audit"]["total"] >= len(issues)  # or goes through them in the browser
    moved, dropped = {}, issues[2]["row"]
    for issue in issues[:2]:
        moved[issue["row"]] = issue["new_label"] = NAMES[(NAMES.index(issue["given_label"]) + 1) % 4]
    issues[2]["new_label"] = "DROP"
    write_records(review, issues)

    out = run_printed(relabel, capsys)
    assert "relabelled 2 rows, dropped 1" in out
    corrected = tmp_path / "runs" / "news" / "audit" / "news-relabelled" / "train_relabelled.csv"
    with open(corrected, newline="", encoding="utf-8") as file:
        assert next(csv.reader(file)) == list(HEADER)  # the user's own columns
    expected = [(title, body, moved.get(str(row), topic)) for row, (title, body, topic) in enumerate(headline_rows(0, 120), 1)
                if str(row) != dropped]
    assert [(r["title"], r["body"], r["topic"]) for r in read_csv(corrected)] == expected
    new_run = tmp_path / "runs" / "news-relabelled"
    results = json.loads((new_run / "results.json").read_text())
    assert results["rows"]["train"] + results["rows"]["validation"] == 119 and "test" in results  # test.csv read too

    [again] = printed_commands(out)
    out = run_printed(again, capsys)
    assert "119 rows audited" in out and printed_commands(out)  # the loop goes on


def test_suggest_label_and_train_from_the_suggestions(news_run, tmp_path, capsys):
    pool = headline_rows(200, 320)
    write_csv(tmp_path / "pool.csv", [(title, body) for title, body, _ in pool], ("title", "body"))
    out = run_printed(["bertfit", "suggest", str(news_run), "--pool", "pool.csv", "--n", "24", "--quiet"], capsys)
    [train, browse] = printed_commands(out)
    suggestions = read_csv(tmp_path / "suggestions.csv")
    assert list(suggestions[0])[:3] == list(HEADER) and len(suggestions) == 24
    assert run_review_briefly(browse)["label"]["total"] == 24  # the browser's label queue holds the same texts
    # the labeller fills the topic column, as the run names it, with the true labels
    for record in suggestions:
        title, body, topic = pool[int(record["pool_row"]) - 1]
        assert (record["title"], record["body"], record["topic"]) == (title.strip(), body.strip(), "")
        record["topic"] = topic
    write_records(tmp_path / "suggestions.csv", suggestions)

    run_printed(train, capsys, *SHORT_RUN)
    [new_run] = [p for p in (tmp_path / "runs").iterdir() if p.name != "news"]
    config = (new_run / "config.yaml").read_text()
    assert "label_column: topic" in config and str(tmp_path / "suggestions.csv") in config
    assert json.loads((new_run / "labels.json").read_text()) == json.loads((news_run / "labels.json").read_text())

    # a second suggest keeps the labelled file: it names the flag that would replace it
    assert main(["suggest", str(news_run), "--pool", "pool.csv", "--n", "5"]) == 2
    err = capsys.readouterr().err
    assert "suggestions.csv already exists" in err and "(--overwrite)" in err
    assert read_csv(tmp_path / "suggestions.csv")[0]["topic"] != ""
