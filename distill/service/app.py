"""``create_app(settings)``: the FastAPI app. Its lifespan loads the student (and index) into ``app.state``."""

from __future__ import annotations

import base64
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

import distill
from distill.index.models import model_identity
from distill.service.admission import Admission
from distill.service.embedder import Batcher, Embedder
from distill.service.errors import APIError, install_error_handlers
from distill.service.metrics import Metrics
from distill.service.middleware import GuardMiddleware
from distill.service.schemas import EmbeddingRequest, SearchRequest
from distill.service.searcher import Searcher
from distill.service.settings import ServiceSettings
from distill.students import StaticStudent, Student, load_student
from distill.students.base import INPUT_TYPE_PROMPTS, input_type_prompt
from distill.students.long import LongTextError, Plan

logger = logging.getLogger("distill.service")

# Small requests tokenize and serialize on the event loop: a hop to a worker thread costs more than
# the work (tens of microseconds) and, on a busy CPU, waits for a core. Big ones go to threads.
_INLINE_CHARS = 8192
_INLINE_FLOATS = 32_768


@dataclass
class ServiceState:
    """What the lifespan loads; handlers reach it as ``request.app.state.service``."""

    settings: ServiceSettings
    name: str
    student: Student
    embedder: Embedder
    batcher: Batcher
    searcher: Searcher | None
    created: int
    metrics: Metrics


def create_app(settings: ServiceSettings, student: Student | None = None) -> FastAPI:
    """The service app. Nothing is loaded until the lifespan starts (uvicorn, or ``with TestClient(app)``).

    :param student: an already loaded student to serve instead of loading ``settings.model`` (the
        CLI loads it first so that a bad folder is a one-line error, not a startup traceback).
    :raises DistillError: at startup: not a student folder, not an index folder, or an index built
        with another model.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = await _load(settings, student, metrics)
        app.state.service = s
        try:
            yield
        finally:
            await s.batcher.stop()
            if s.searcher is not None:
                await s.searcher.close()

    app = FastAPI(title="distill", version=distill.__version__, lifespan=lifespan,
                  summary="OpenAI-compatible embeddings from hierarchical (Matryoshka) students")
    install_error_handlers(app)
    admission = Admission(settings.max_concurrent, settings.admission_target_s,
                          floor=min(2, settings.max_concurrent))
    app.add_middleware(GuardMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes,
                       admission=admission, api_key=settings.api_key.get_secret_value() if settings.api_key else None)
    app.state.metrics = metrics
    app.include_router(router)
    return app


async def _load(settings: ServiceSettings, student: Student | None, metrics: Metrics) -> ServiceState:
    """The student (loaded unless given), its embedder and running batcher, and the index when there is one."""
    if student is None:
        from distill.devices import resolve_device

        student = await run_in_threadpool(load_student, settings.model, resolve_device(settings.device))
    embedder = Embedder(student, max_batch=settings.max_batch, max_batch_tokens=settings.max_batch_tokens)
    batcher = Batcher(embedder.core, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000,
                      max_pending=settings.max_pending, timeout_s=settings.request_timeout_s,
                      merge=settings.batching, on_batch=metrics.observe_batch)
    searcher = None
    if settings.index is not None:
        searcher = Searcher(settings.index)
        try:
            await searcher.open(model_identity(student))
        except BaseException:
            await searcher.close()
            raise
    batcher.start()
    logger.info("serving %s (%s student, dims %s)%s", settings.served_name, student.kind, student.dims,
                f" with index {settings.index}" if searcher else "")
    return ServiceState(settings, settings.served_name, student, embedder, batcher, searcher, int(time.time()),
                        metrics)


router = APIRouter()


async def _vectors(s: ServiceState, input_: str | list, long: str, truncate: bool, input_type: str | None,
                   param: str = "input") -> tuple[np.ndarray, Plan]:
    """Raw full-width vectors (N, width) of a request's inputs, through the batcher, and the plan that says
    what was cut (its ``n_tokens`` as ``core`` counted them)."""
    plan = await _plan(s, input_, long, truncate, input_type, param=param)
    s.metrics.observe_long(plan.truncated_texts, plan.truncated_tokens, plan.chunked_texts)
    raw, tokens = await s.batcher.embed(plan.seqs)  # (R, width), (R,)
    if plan.seqs and isinstance(plan.seqs[0], str):  # a static student's texts: counted by its word cache
        plan.n_tokens = int(tokens.sum())
    return plan.combine(raw), plan  # (R, width) rows -> (N, width) texts


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    s: ServiceState = request.app.state.service
    _check_model(s, body.model)
    dim = _check_dimensions(s.student.dims, body.dimensions)
    raw, plan = await _vectors(s, body.input, body.long, body.truncate, body.input_type)  # (N, width)
    if plan.n_texts * dim <= _INLINE_FLOATS:
        return _embedding_response(raw, dim, body.encoding_format, s.name, plan)
    return await run_in_threadpool(_embedding_response, raw, dim, body.encoding_format, s.name, plan)

@router.post("/v1/search")
async def search(body: SearchRequest, request: Request) -> JSONResponse:
    s: ServiceState = request.app.state.service
    texts, dim = _search_request(s, body)
    # cut, refused or chunked and counted as /v1/embeddings' inputs are ("queries" names `query` too)
    raw, plan = await _vectors(s, texts, body.long, body.truncate, body.input_type, param="queries")  # (N, width)
    hits = await s.searcher.search(raw, body.k, dim)
    data = [{"index": i, "query": t, "hits": h} for i, (t, h) in enumerate(zip(texts, hits))]
    return JSONResponse({"object": "list", "model": s.name, "dimensions": dim, "data": data,
                         "usage": _usage(plan)})

@router.get("/health")
async def health(request: Request) -> dict:
    s: ServiceState = request.app.state.service
    index = None
    if s.searcher is not None:
        m = s.searcher.manifest
        index = {"path": str(s.searcher.folder), "count": m.count, "dims": m.dims, "index_type": m.index_type,
                 "backend": m.backend}
    return {"status": "ok", "model": s.name, "kind": s.student.kind, "dim": s.student.dim,
            "dims": s.student.dims, "batching": s.settings.batching, "index": index}

@router.get("/v1/models")
async def models(request: Request) -> dict:
    s: ServiceState = request.app.state.service
    prompts = s.student.prompts
    return {"object": "list", "data": [{"id": s.name, "object": "model", "created": s.created,
                                        "owned_by": "distill", "dimensions": s.student.dims,
                                        # None: a static student takes texts of any length
                                        "max_input_tokens": s.embedder.max_length,
                                        # what input_type and no input_type put before a text
                                        "prompts": prompts,
                                        "default_prompt_name": s.student.config.default_prompt_name,
                                        "input_types": [t for t in INPUT_TYPE_PROMPTS
                                                        if input_type_prompt(prompts, t) is not None]}]}

@router.get("/metrics")
async def prometheus(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)



def _search_request(s: ServiceState, body: SearchRequest) -> tuple[list[str], int]:
    """The query texts and the prefix size of a /v1/search request, checked against the limits and the index."""
    _check_model(s, body.model)
    if s.searcher is None:
        raise APIError(404, "no index is loaded: start the server with --index INDEX_DIR", code="no_index")
    if (body.query is None) == (body.queries is None):
        raise APIError(422, "pass exactly one of `query` (a text) or `queries` (a list of texts)",
                       param="query", code="invalid_value")
    texts = [body.query] if body.query is not None else list(body.queries or [])
    _check_texts(s.settings, texts, param="queries")  # errors name this field for `query` too
    if not 1 <= body.k <= s.settings.max_k:
        raise APIError(422, f"k must be between 1 and {s.settings.max_k}, got {body.k}", param="k",
                       code="invalid_value")
    dims = s.searcher.manifest.dims
    dim = body.dimensions if body.dimensions is not None else max(dims)
    if dim not in dims:
        raise APIError(400, f"dimensions must be one of {', '.join(map(str, dims))} for this index, got {dim}",
                       param="dimensions", code="invalid_dimensions")
    return texts, dim


def app_from_environment() -> FastAPI:
    """The app of one ``--workers`` process: settings from the ``DISTILL_*`` variables the parent set
    (``uvicorn --factory distill.service.app:app_from_environment`` runs it the same way)."""
    return create_app(ServiceSettings())


def _check_model(s: ServiceState, model: str | None) -> None:
    if model is not None and model != s.name:
        raise APIError(404, f"model {model!r} is not served here; this server serves {s.name!r}", param="model",
                       code="model_not_found")


def _check_dimensions(dims: list[int], dimensions: int | None) -> int:
    """Any nested size of the student, the full width (its last) included; none: the full width."""
    if dimensions is None:
        return dims[-1]
    if dimensions not in dims:
        raise APIError(400, f"dimensions must be one of {', '.join(map(str, dims))} (the student's nested sizes), "
                            f"got {dimensions}", param="dimensions", code="invalid_dimensions")
    return dimensions


def _check_texts(settings: ServiceSettings, texts: list[str], param: str = "input") -> None:
    if not texts:
        raise APIError(422, f"{param} is empty", param=param, code="empty_input")
    if len(texts) > settings.max_inputs:
        raise APIError(413, f"too many inputs: {len(texts)} (at most {settings.max_inputs} per request)",
                       param=param, code="too_many_inputs")
    for i, t in enumerate(texts):
        if not t:
            raise APIError(422, f"{param}[{i}] is an empty string", param=param, code="empty_input")
        if len(t) > settings.max_input_chars:
            raise APIError(422, f"{param}[{i}] has {len(t)} characters (at most {settings.max_input_chars})",
                           param=param, code="input_too_long")
        if not t.isascii():
            _check_unicode(t, f"{param}[{i}]", param)


def _check_unicode(text: str, where: str, param: str) -> None:
    """JSON may escape half of a UTF-16 pair (``"\\ud800"``): Python keeps the lone surrogate, the tokenizer
    cannot take it (a TypeError, once a 500). Such a text is no text: a 422."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(422, f"{where} holds a lone surrogate ({text[e.start]!r} at character {e.start}), which is "
                            "not valid Unicode text", param=param, code="invalid_text") from None


def _prompt(s: ServiceState, input_type: str | None) -> str:
    """The text put before each input text: the model's prompt for ``input_type``, else its default prompt
    (the one its training texts had, as ``student.encode`` puts it)."""
    if input_type is None:
        return s.student.prompt_text()
    text = input_type_prompt(s.student.prompts, input_type)
    if text is None:
        names = " or ".join(repr(n) for n in INPUT_TYPE_PROMPTS[input_type])
        known = ", ".join(map(repr, s.student.prompts))
        why = (f"its prompts are {known}" if known else
               "it records no prompts, so it embeds queries and documents alike")
        raise APIError(400, f"input_type {input_type!r} needs a prompt named {names}, which this model does not have "
                            f"({why}); leave input_type out", param="input_type", code="invalid_input_type")
    return text


async def _plan(s: ServiceState, input_: str | list, long: str, truncate: bool, input_type: str | None = None,
                param: str = "input") -> Plan:
    """The forward rows of each input (see :mod:`distill.students.long`), texts with their prompt before
    them; a text past the limit with ``truncate`` off is a 400 naming it."""
    texts = isinstance(input_, str) or (bool(input_) and isinstance(input_[0], str))
    seqs = _checked_inputs(s, input_, param=param)
    if not texts and input_type is not None:
        raise APIError(400, "input_type puts a prompt before texts; token-id inputs are embedded as given: send "
                            "texts, or leave input_type out", param="input_type", code="invalid_input_type")
    try:
        if not texts:
            return s.embedder.plan_ids(seqs, long, truncate)
        prompt = _prompt(s, input_type)
        if prompt:
            seqs = [prompt + t for t in seqs]
        if isinstance(s.student, StaticStudent) or sum(map(len, seqs)) <= _INLINE_CHARS:  # static: no tokenizer
            return s.embedder.plan_texts(seqs, long, truncate)
        return await run_in_threadpool(s.embedder.plan_texts, seqs, long, truncate)
    except LongTextError as e:
        raise APIError(400, f"{param}[{e.index}] has {e.n_tokens} tokens, past this model's limit of {e.limit}; "
                            'send "truncate": true to cut it, or "long": "chunk" to embed it in windows',
                       param=param, code="input_too_long") from None


def _checked_inputs(s: ServiceState, input_: str | list, param: str = "input") -> list:
    """The inputs as a list of texts or of token-id lists, as they came, checked: texts against the size
    limits, token ids against the vocabulary.

    :param param: the request field the inputs came in, for error messages.
    """
    if isinstance(input_, str):
        input_ = [input_]
    if input_ and isinstance(input_[0], int):
        input_ = [input_]  # one token-id list
    if not input_ or isinstance(input_[0], str):
        _check_texts(s.settings, input_, param=param)
        return list(input_)
    if len(input_) > s.settings.max_inputs:
        raise APIError(413, f"too many inputs: {len(input_)} (at most {s.settings.max_inputs} per request)",
                       param="input", code="too_many_inputs")
    vocab, limit = s.embedder.vocab_size, s.settings.max_input_tokens
    for i, ids in enumerate(input_):
        if not ids:
            raise APIError(422, f"input[{i}] is an empty token list", param="input", code="empty_input")
        if len(ids) > limit:
            raise APIError(422, f"input[{i}] has {len(ids)} tokens (at most {limit})", param="input",
                           code="input_too_long")
        if min(ids) < 0 or max(ids) >= vocab:
            raise APIError(422, f"input[{i}] holds token ids outside 0..{vocab - 1}", param="input",
                           code="invalid_token_id")
    return input_


def _embedding_response(raw: np.ndarray, dim: int, encoding_format: str, name: str, plan: Plan) -> Response:
    x = Embedder.post(raw, dim)  # (N, dim)
    if encoding_format == "base64":  # what the openai client asks for by default: little-endian float32
        vectors: list = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in x]
    else:
        vectors = list(x)  # rows as numpy arrays: orjson writes each float32 in its shortest exact form
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    # orjson, not json.dumps over lists of Python floats: 64 vectors of 256 floats take 0.6 ms, not 13 ms
    body = orjson.dumps({"object": "list", "data": data, "model": name, "usage": _usage(plan)},
                        option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, media_type="application/json")


def _usage(plan: Plan) -> dict:
    """Tokens embedded (prompts included; OpenAI's ``prompt_tokens`` means the input) and what was cut."""
    return {"prompt_tokens": plan.n_tokens, "total_tokens": plan.n_tokens, "truncated_texts": plan.truncated_texts,
            "truncated_tokens": plan.truncated_tokens}

