"""The HTTP service: `bertfit serve RUN` -> a FastAPI app with micro-batching, limits and a web page.

    POST /predict   {"texts": ["...", ...]} or {"text": "..."}, optional "top_k" -> labels, probabilities
    GET  /health    liveness, backend and batching counters (never needs the API key)
    GET  /metadata  labels, model, the run's metrics, limits, version
    GET  /          a page to type texts and see a probability bar per class; /docs: OpenAPI

Concurrent requests are merged into one model call (deploy.microbatch). Bad requests get a 4xx
that says what to change: 400 unreadable body, 401 missing API key, 413 body too large, 422 wrong
shape, empty list, too many texts, a text too long, empty or not valid Unicode (that request alone:
its neighbours in the same model call are answered), 503 with Retry-After when the queue is full.
The service binds to loopback by default; another address needs an API key or allow_public.
Connections are guarded (deploy.guard): a request must arrive whole within request_timeout_s, idle
keep-alive connections close after keep_alive_s, a client that goes away has its work dropped.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, model_validator

from bertfit import __version__, artifacts
from bertfit.deploy.guard import (
    LOOPBACK_NAMES,
    BodyLimit,
    RequestGuard,
    connection_cap,
    guarded_protocol,
    is_loopback,
    quiet_floods,
    raise_open_file_limit,
    validation_error,
)
from bertfit.deploy.microbatch import MicroBatcher, QueueFull
from bertfit.errors import BertfitError
from bertfit.infer.predictor import text_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 32  # texts per model call
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_texts: int = 256  # texts per request
    max_text_chars: int = 20_000  # characters per text (the model truncates tokens; this bounds tokenizer work)
    max_body_bytes: int = 2_000_000
    max_queued_texts: int = 4096  # texts waiting for the model; beyond, 503 with Retry-After
    request_timeout_s: float = 10.0  # a connection must deliver a whole request (headers + body) in this time
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    api_key: str | None = None  # when set, /predict, /metadata and /docs need header X-API-Key
    allowed_hosts: tuple[str, ...] | None = None  # Host header names answered (None: any); serve() on loopback: its own

    def __post_init__(self) -> None:
        problems = [f"{name}: must be > 0, got {value}" for name, value in asdict(self).items()
                    if name not in ("api_key", "allowed_hosts") and not value > 0]
        if problems:
            raise BertfitError("serve settings: " + "; ".join(problems))


def page_html() -> str:
    return resources.files("bertfit.deploy").joinpath("page.html").read_text(encoding="utf-8")


def read_results(run_dir: Path) -> dict[str, Any]:
    """The run's validation and test metrics (an export folder's are in its run directory), or {}."""
    for folder in (run_dir, run_dir.parent):
        results = artifacts.read_results(folder)
        if results:
            return {key: results.get(key) for key in ("validation", "test", "best_step")}
    return {}


def serve(run_dir: str | Path, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
          allow_public: bool = False, **predictor_options: Any) -> None:
    """Load the run and serve it with uvicorn until SIGINT/SIGTERM; in-flight requests are finished first.

    A non-loopback `host` needs settings.api_key, or allow_public to serve without one on purpose.
    `predictor_options` go to the Predictor (backend, device, threads); its batch size is settings.max_batch.
    """
    import uvicorn

    from bertfit.infer.predictor import Predictor

    settings = bind_settings(settings, host, port, allow_public)
    run_dir = Path(run_dir)
    predictor = Predictor(run_dir, batch_size=settings.max_batch, **predictor_options)
    quiet_floods()
    uvicorn.Server(uvicorn_config(create_app(predictor, settings, run_dir), settings, host, port)).run()


def bind_settings(settings: ServeSettings, host: str, port: int, allow_public: bool) -> ServeSettings:
    """`settings` for serving on host:port: a non-loopback host needs an API key or allow_public (anyone who
    reaches it could use the service), and a loopback one answers only its own Host names."""
    if not 0 <= port <= 65535:
        raise BertfitError(f"port: must be in 0..65535 (0: any free port), got {port}")
    if not is_loopback(host) and settings.api_key is None:
        if not allow_public:
            raise BertfitError(f"host: {host} is reachable from other machines and no API key is set; set one "
                               "(serve and review read BERTFIT_API_KEY) or serve without one on purpose (allow_public)")
        log.warning("serving on %s without an API key: anyone who can reach this address can use it", host)
    if is_loopback(host) and settings.allowed_hosts is None:
        settings = replace(settings, allowed_hosts=LOOPBACK_NAMES + ((host,) if host not in LOOPBACK_NAMES else ()))
    return settings


def uvicorn_config(app: Any, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
                   log_level: str = "info") -> Any:
    """uvicorn settings with the connection guards (deploy.guard) and the open-file limit raised."""
    import uvicorn

    protocol = guarded_protocol(settings.request_timeout_s, connection_cap(raise_open_file_limit()))
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_keep_alive=settings.keep_alive_s,
                          h11_max_incomplete_event_size=16 * 1024, timeout_graceful_shutdown=30,
                          log_level=log_level, access_log=False)


class PredictRequest(BaseModel):
    text: str | None = Field(None, description="one text; give either text or texts")
    texts: list[str] | None = Field(None, description="several texts, answered in the same order")
    top_k: int | None = Field(None, ge=1, description="also list the k most probable labels per text")

    @model_validator(mode="after")
    def one_of_text_or_texts(self) -> "PredictRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
        return self


class LabelScore(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    label: str  # multi-label: the predicted labels joined with "|" (bertfit.infer.predictor.Prediction)
    confidence: float
    probabilities: dict[str, float]
    labels: list[LabelScore] | None = None  # multi-label: each predicted label with its probability
    top_k: list[LabelScore] | None = None


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]
    backend: str


def create_app(predictor: Any, settings: ServeSettings, run_dir: Path) -> FastAPI:
    """The FastAPI app for one loaded Predictor (any backend)."""
    batcher = MicroBatcher(predictor.predict_proba, settings.max_batch, settings.max_wait_ms, settings.max_queued_texts)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        try:
            yield
        finally:  # uvicorn has stopped accepting and finished in-flight requests by now
            await batcher.stop()

    app = FastAPI(title="bertfit", version=__version__, lifespan=lifespan,
                  description=f"Text classification with {predictor.meta.base_model} fine-tuned by bertfit.")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestGuard, api_key=settings.api_key, allowed_hosts=settings.allowed_hosts)
    app.add_exception_handler(RequestValidationError, validation_error)
    auth = [Depends(key_checker(settings.api_key))]
    metadata = {"labels": list(predictor.labels.names), "version": __version__, "run": str(run_dir),
                "model": {"base_model": predictor.meta.base_model, "backend": predictor.backend_name,
                          "backend_note": getattr(predictor, "backend_note", None),
                          "max_length": predictor.meta.max_length, "temperature": predictor.temperature,
                          "stack": _stack_summary(predictor)},
                "metrics": read_results(run_dir), "export_check": predictor.export.check if predictor.export else None,
                "limits": {k: v for k, v in asdict(settings).items() if k != "api_key"},
                "auth_required": settings.api_key is not None}

    @app.post("/predict", response_model=PredictResponse, dependencies=auth)
    async def predict(body: PredictRequest, request: Request) -> PredictResponse:
        texts = [body.text] if body.text is not None else body.texts
        check_texts(texts, settings)
        probabilities = await answer_unless_gone(batcher, texts, request)
        return PredictResponse(predictions=[to_prediction(p, body.top_k) for p in predictor.decide(texts, probabilities)],
                               backend=predictor.backend_name)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "backend": predictor.backend_name, "batches_run": batcher.batches_run,
                "texts_run": batcher.texts_run, "queued_texts": batcher.queued_texts,
                "dropped_requests": batcher.dropped_requests, "auth_required": settings.api_key is not None}

    @app.get("/metadata", dependencies=auth)
    async def get_metadata() -> dict[str, Any]:
        return metadata

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return page_html()

    return app


def _stack_summary(predictor: Any) -> dict[str, Any] | None:
    """The stacked ensemble the probabilities come from (model weight, validation metrics), or None."""
    stack = getattr(predictor, "stack", None)
    if stack is None:
        return None
    return {"model_weight": stack.meta.model_weight, "metric": stack.meta.metric, "validation": stack.meta.validation}


def check_texts(texts: list[str], settings: ServeSettings) -> None:
    if not texts:
        raise HTTPException(422, "'texts' is empty; send at least one text")
    if len(texts) > settings.max_texts:
        raise HTTPException(422, f"{len(texts)} texts in one request; the limit is {settings.max_texts} "
                                 "(serve --max-texts); split the list")
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise HTTPException(422, f"text {i} has {len(text):,} characters; the limit is "
                                     f"{settings.max_text_chars:,} (serve --max-text-chars)")
        problem = text_problem(text)
        if problem is not None:
            raise HTTPException(422, f"text {i} {problem}")


async def answer_unless_gone(batcher: MicroBatcher, texts: list[str], request: Request) -> Any:
    """The batcher's rows for `texts`; 503 when its queue is full; the work is dropped if the client leaves."""
    work = asyncio.ensure_future(batcher.submit(texts))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():  # the client went away (or this handler was cancelled): nobody wants the rows
            work.cancel()
    if not work.done():
        raise HTTPException(499, "client closed the request")  # nobody reads it; ends the handler
    try:
        return work.result()
    except QueueFull as full:
        raise HTTPException(503, f"busy: {full}; retry later", headers={"Retry-After": str(full.retry_after_s)}) from None


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone: the body is read, so the next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def to_prediction(prediction: Any, top_k: int | None) -> PredictionOut:
    """A Predictor's Prediction as the service answers it, with the k most probable labels when asked."""
    chosen = prediction.label_probabilities
    ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])[:top_k] if top_k else None
    return PredictionOut(label=prediction.label, confidence=prediction.confidence, probabilities=prediction.probabilities,
                         labels=None if chosen is None else [LabelScore(label=k, probability=v) for k, v in chosen.items()],
                         top_k=None if ranked is None else [LabelScore(label=k, probability=v) for k, v in ranked])


def key_checker(api_key: str | None) -> Callable:
    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def check(given: str | None = Security(header)) -> None:
        if api_key is None:
            return
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send header X-API-Key")
    return check
