"""The review API (bertfit review): decisions reach RUN/review/ before the answer, survive a reopen and a torn
write, bad requests are refused with what is allowed, and the page is guarded as `bertfit serve` is."""

from __future__ import annotations

import json
import logging

import pytest
from review_run import copy_run, make_review_run

fastapi = pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tiny_model_dir, ag_news_rows):
    return make_review_run(tmp_path_factory.mktemp("review"), tiny_model_dir, ag_news_rows)


@pytest.fixture
def review_run(base_run, tmp_path):
    return copy_run(base_run, tmp_path)


def client_for(run, suggestions, model=None, **settings):
    from fastapi.testclient import TestClient

    from bertfit.deploy.review import create_review_app
    from bertfit.deploy.review_sources import open_review
    from bertfit.deploy.serve import ServeSettings

    state = open_review(run, suggestions)
    return state, TestClient(create_review_app(state, ServeSettings(**settings), model, run.name))


def journal(run) -> list[dict]:
    return [json.loads(line) for line in (run / "review" / "decisions.jsonl").read_text().splitlines()]


def test_decisions_are_on_disk_and_a_reopen_continues_where_it_stopped(review_run):
    from bertfit.deploy.review_sources import open_review

    run, suggestions = review_run
    state, client = client_for(run, suggestions)
    meta = client.get("/api/state").json()
    assert meta["labels"] == ["Business", "Sci/Tech", "Sports", "World"] and meta["keys"]["World"] == "4"
    assert meta["queues"]["label"]["total"] == 5 and meta["queues"]["audit"]["total"] >= 3
    first = client.get("/api/next", params={"queue": "audit"}).json()["item"]
    assert first["position"] == 1 and first["prefill"] == first["given"] and not first["decided"]
    other = next(label for label in meta["labels"] if label != first["given"])
    after = client.post("/api/decide", json={"queue": "audit", "item": first["id"], "label": other}).json()
    assert journal(run)[-1]["item"] == first["id"] and journal(run)[-1]["label"] == other  # written before the answer
    assert after["progress"] == {"total": meta["queues"]["audit"]["total"], "decided": 1, "skipped": 0, "changed": 1}
    second = after["item"]
    client.post("/api/decide", json={"queue": "audit", "item": second["id"], "label": None})  # skip
    third = client.get("/api/next", params={"queue": "audit"}).json()["item"]
    client.post("/api/decide", json={"queue": "audit", "item": third["id"], "label": "DROP"})
    undone = client.post("/api/undo", json={"queue": "audit"}).json()
    assert undone["undone"] == third["id"] and undone["item"]["id"] == third["id"] and not undone["item"]["decided"]
    labels = client.get("/api/next", params={"queue": "label"}).json()["item"]
    assert labels["prefill"] == labels["suggested"] and labels["values"] == {"text": labels["text"]}
    client.post("/api/decide", json={"queue": "label", "item": labels["id"], "label": labels["prefill"]})

    reopened = open_review(run)  # a new process: only the files
    assert reopened.labelled("audit") == {first["id"]: other}
    assert reopened.decisions("audit") == {first["id"]: other, second["id"]: None}
    assert reopened.current("audit") == third["id"]  # never decided: shown before the skipped one
    assert reopened.progress("label") == {"total": 5, "decided": 1, "skipped": 0, "changed": 0}
    assert [r.get("undo") for r in journal(run)] == [None, None, None, journal(run)[2]["seq"], None]


def test_a_line_cut_short_by_a_crash_is_dropped_and_the_rest_kept(review_run, caplog):
    from bertfit.deploy.review_sources import open_review

    run, suggestions = review_run
    state = open_review(run, suggestions)
    first, second = state.order["label"][:2]
    state.decide("label", first, "World")
    path = run / "review" / "decisions.jsonl"
    with open(path, "a") as file:
        file.write('{"seq": 2, "queue": "label", "item": "' + second)  # the process died mid-write
    with caplog.at_level(logging.WARNING):
        reopened = open_review(run)
    assert "incomplete last line" in caplog.text
    assert reopened.labelled("label") == {first: "World"}
    reopened.decide("label", second, "Sports")
    assert [(r["item"], r["label"]) for r in journal(run)] == [(first, "World"), (second, "Sports")]


def test_bad_decisions_are_refused_with_what_is_allowed(review_run):
    run, suggestions = review_run
    state, client = client_for(run, suggestions)
    item = state.order["label"][0]
    answer = client.post("/api/decide", json={"queue": "label", "item": item, "label": "Weather"})
    assert answer.status_code == 422 and "'Weather' is not one of Business, Sci/Tech, Sports, World" in answer.text
    answer = client.post("/api/decide", json={"queue": "label", "item": item, "label": "DROP"})  # audit rows only
    assert answer.status_code == 422 and "World" in answer.text
    assert client.post("/api/decide", json={"queue": "audit", "item": item, "label": "World"}).status_code == 422
    assert "queue: must be one of audit, label" in client.get("/api/next", params={"queue": "x"}).text
    assert not (run / "review" / "decisions.jsonl").exists()


def test_the_page_is_guarded_like_serve(review_run):
    from bertfit.deploy.serve import ServeSettings, bind_settings
    from bertfit.errors import BertfitError

    run, suggestions = review_run
    _, client = client_for(run, suggestions, api_key="secret", allowed_hosts=("localhost",))
    local = {"Host": "localhost"}
    assert client.get("/health", headers=local).json()["auth_required"] is True
    assert client.get("/api/state", headers=local).status_code == 401
    assert client.get("/api/state", headers={**local, "X-API-Key": "secret"}).status_code == 200
    assert client.get("/api/state", headers={"Host": "evil.example", "X-API-Key": "secret"}).status_code == 421
    assert "bertfit review" in client.get("/", headers=local).text
    with pytest.raises(BertfitError, match="no API key is set"):
        bind_settings(ServeSettings(), "0.0.0.0", 8100, allow_public=False)


def test_a_second_suggestions_file_adds_items_and_keeps_decisions(review_run, tmp_path):
    from bertfit.deploy.review_sources import open_review

    run, suggestions = review_run
    state = open_review(run, suggestions)
    state.decide("label", state.order["label"][0], "World")
    more = tmp_path / "more.csv"
    lines = suggestions.read_text().splitlines()
    more.write_text("\n".join([lines[0], lines[1], 'A brand new text about rockets,,7,Sports,0.01']) + "\n")
    grown = open_review(run, more)
    assert len(grown.order["label"]) == 6 and grown.labelled("label") == {state.order["label"][0]: "World"}
    assert open_review(run).order == grown.order  # the queue is kept: no suggestions file needed to reopen


def test_one_writer_at_a_time(review_run):
    from bertfit.deploy.review_state import review_lock
    from bertfit.errors import BertfitError

    run, _ = review_run
    with review_lock(run / "review"):
        with pytest.raises(BertfitError, match="another `bertfit review`"):
            with review_lock(run / "review"):
                pass
    with review_lock(run / "review"):  # released
        pass


def test_the_model_gives_probabilities_and_the_words_behind_them(review_run):
    from bertfit.deploy.review import ReviewModel
    from bertfit.infer.predictor import Predictor

    run, suggestions = review_run
    state, client = client_for(run, suggestions, model=ReviewModel(run))
    item = client.get("/api/next", params={"queue": "label"}).json()["item"]
    expected = Predictor(run).predict([item["text"]])[0]
    assert item["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)
    assert item["model_label"] == expected.label
    words = client.get("/api/explain", params={"queue": "label", "item": item["id"]}).json()
    assert words["label"] == expected.label and len(words["words"]) > 5
    assert all(not word.startswith("##") for word, _ in words["words"])
    _, plain = client_for(run, suggestions)
    assert plain.get("/api/explain", params={"queue": "label", "item": item["id"]}).status_code == 404
