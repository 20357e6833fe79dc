"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``, with handlers.

Status codes: 400 a request the server understood but cannot serve (bad ``dimensions``, malformed
JSON, a ``dimensions`` the index lacks), 401 a missing or wrong API key, 404 an unknown model or
no index loaded, 413 too many inputs or too big a body, 422 wrong types, empty inputs and inputs
past the per-input limits, 503 (with ``Retry-After``) when the server already handles ``max_concurrent``
requests or holds ``max_pending`` texts, or a request waited past ``request_timeout_s``, 500 a bug
(logged; the server keeps serving).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from distill.service.embedder import Overloaded

logger = logging.getLogger("distill.service")

_TYPES = {401: "authentication_error", 404: "not_found_error", 500: "server_error"}


class APIError(Exception):
    """An error answered to the client as JSON in the OpenAI shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


_INPUT_TYPES = "input must be a string, a list of strings, a list of token ids or a list of token-id lists"


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "the request body is not valid JSON", code="invalid_json")
    if any(e.get("loc", ())[:1] == ("body",) and len(e.get("loc", ())) == 1 for e in errors):
        return error_response(422, "the request body must be a JSON object", code="invalid_type")
    first = errors[0]
    param = _loc(first.get("loc", ()))
    if param.split(".")[0] == "input":
        return error_response(422, _INPUT_TYPES, param="input", code="invalid_type")
    detail = "; ".join(f"{_loc(e.get('loc', ()))}: {e.get('msg')}" for e in errors[:3])
    return error_response(422, detail, param=param, code="invalid_type")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, headers=exc.headers)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(503, str(exc), code="overloaded", headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error", code="internal_error")
