"""`bertfit review RUN`: a page to go through the audit and label queues with the keyboard, served like
`bertfit serve` (loopback by default, an API key or allow_public otherwise, the same connection guards).

    GET  /                 the page (review.html)
    GET  /health           liveness; whether the API needs a key (never needs one itself)
    GET  /api/state        labels, their keys, each queue's progress
    GET  /api/next         ?queue=audit|label: the item to show, with the model's probabilities
    POST /api/decide       {"queue", "item", "label"} (label null: skip) -> the next item
    POST /api/undo         {"queue"} -> the item taken back
    GET  /api/explain      ?queue=&item=: the words that drove the model (integrated gradients), when enabled

Every decision is on disk (deploy.review_state) before its answer leaves, so the page shows "saved" only
for what a crash cannot take away.
"""

from __future__ import annotations

import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from bertfit import __version__
from bertfit.deploy.guard import BodyLimit, RequestGuard, quiet_floods, validation_error
from bertfit.deploy.review_sources import open_review
from bertfit.deploy.review_state import DROP, QUEUES, REVIEW_DIR, ReviewState, review_lock
from bertfit.deploy.serve import ServeSettings, bind_settings, key_checker, uvicorn_config
from bertfit.errors import BertfitError

log = logging.getLogger(__name__)

LABEL_KEYS = "123456789abcefghijklmnopqrtvwxyz"  # one key a label, in label order; d, s and u are the page's own
EXPLAIN_STEPS = 16  # integration steps: enough to rank a text's words, a fraction of `bertfit explain`'s cost


def label_keys(labels: list[str]) -> dict[str, str]:
    """label -> the key that picks it (labels beyond the keys' count are picked with the mouse)."""
    return {label: key for label, key in zip(labels, LABEL_KEYS)}


def review_page() -> str:
    return resources.files("bertfit.deploy").joinpath("review.html").read_text(encoding="utf-8")


class ReviewModel:
    """The run's model as the page needs it: probabilities of one text (cached), and its words' attributions."""

    def __init__(self, run_dir: Path, device: str = "auto", explain: bool = True):
        from bertfit.infer.predictor import Predictor

        self.run_dir, self.device, self.explains = Path(run_dir), device, explain
        self.predictor = Predictor(run_dir, device=device)
        self.cache: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()  # one model call at a time: the page asks for one item's details at once
        self.loaded: Any = None

    def probabilities(self, text: str) -> dict[str, float]:
        with self.lock:
            if text not in self.cache:
                self.cache[text] = self.predictor.predict([text])[0].probabilities
            return self.cache[text]

    def explain(self, text: str) -> dict[str, Any]:
        from bertfit.artifacts import load_model
        from bertfit.evaluate.explain import integrated_gradients, merge_word_pieces, special_tokens_of
        from bertfit.runtime.device import choose_device

        with self.lock:
            if self.loaded is None:
                self.loaded = load_model(self.run_dir)
                self.loaded.model.to(choose_device(self.device))
            attribution = integrated_gradients(self.loaded, text, steps=EXPLAIN_STEPS)
            words = merge_word_pieces(attribution.tokens, attribution.scores, set(special_tokens_of(self.loaded)))
        return {"label": attribution.label, "words": [[word, round(score, 4)] for word, score in words]}


class Decision(BaseModel):
    queue: str
    item: str
    label: str | None = None  # None: skip


class UndoRequest(BaseModel):
    queue: str


def create_review_app(state: ReviewState, settings: ServeSettings, model: ReviewModel | None = None,
                      run_name: str = "") -> FastAPI:
    """The review page and its API over one ReviewState (`model`: probabilities and explanations, optional)."""
    app = FastAPI(title="bertfit review", version=__version__)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestGuard, api_key=settings.api_key, allowed_hosts=settings.allowed_hosts)
    app.add_exception_handler(RequestValidationError, validation_error)
    auth = [Depends(key_checker(settings.api_key))]
    lock = threading.Lock()  # handlers run in a thread pool; the journal takes one writer at a time

    def view(queue: str, item_id: str | None = None) -> dict[str, Any]:
        state.check_queue(queue)
        item_id = item_id if item_id is not None else state.current(queue)
        return {"queue": queue, "progress": state.progress(queue), "can_undo": state.can_undo(queue),
                "item": None if item_id is None else details(state, model, queue, item_id)}

    def guarded(work: Any) -> Any:
        try:
            with lock:
                return work()
        except BertfitError as error:
            raise HTTPException(422, str(error)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return review_page()

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "auth_required": settings.api_key is not None}

    @app.get("/api/state", dependencies=auth)
    def get_state() -> dict[str, Any]:
        return {"run": run_name, "labels": state.labels, "keys": label_keys(state.labels), "drop": DROP,
                "explain": model is not None and model.explains,
                "queues": {queue: state.progress(queue) for queue in QUEUES}}

    @app.get("/api/next", dependencies=auth)
    def get_next(queue: str) -> dict[str, Any]:
        return guarded(lambda: view(queue))

    @app.post("/api/decide", dependencies=auth)
    def decide(body: Decision) -> dict[str, Any]:
        return guarded(lambda: (state.decide(body.queue, body.item, body.label), view(body.queue))[1])

    @app.post("/api/undo", dependencies=auth)
    def undo(body: UndoRequest) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            undone = state.undo(body.queue)
            return {**view(body.queue, undone), "undone": undone}
        return guarded(work)

    @app.get("/api/explain", dependencies=auth)
    def explain(queue: str, item: str) -> dict[str, Any]:
        if model is None or not model.explains:
            raise HTTPException(404, "explanations are off (bertfit review --no-explain)")
        text = guarded(lambda: state.item(queue, item))["text"]
        return model.explain(text)

    return app


def details(state: ReviewState, model: ReviewModel | None, queue: str, item_id: str) -> dict[str, Any]:
    """An item as the page shows it: its record, where it stands, its decision, and the model's probabilities."""
    item = state.item(queue, item_id)
    probabilities = model.probabilities(item["text"]) if model is not None else item.get("probabilities")
    decided = state.decisions(queue)
    return {**item, "position": state.order[queue].index(item_id) + 1, "decided": item_id in decided,
            "decision": decided.get(item_id), "probabilities": probabilities,
            "model_label": max(probabilities, key=probabilities.get) if probabilities else None}


def serve_review(run_dir: str | Path, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8100,
                 allow_public: bool = False, suggestions: str | Path | None = None, **model_options: Any) -> None:
    """Serve the review of a run with uvicorn until SIGINT/SIGTERM; the review folder is locked meanwhile.
    `model_options` go to ReviewModel (device, explain)."""
    import uvicorn

    settings = bind_settings(settings, host, port, allow_public)
    run_dir = Path(run_dir)
    with review_lock(run_dir / REVIEW_DIR):
        state = open_review(run_dir, suggestions)
        model = ReviewModel(run_dir, **model_options)
        quiet_floods()
        app = create_review_app(state, settings, model, run_dir.name)
        uvicorn.Server(uvicorn_config(app, settings, host, port)).run()
