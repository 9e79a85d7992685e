"""One error shape for every failure: `{"error": {"message", "type", "param", "code"}}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assay.api.models import ErrorResponse

log = logging.getLogger("assay.api")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
          413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error"}


class APIError(Exception):
    """Raised anywhere in a request; rendered by the handler below."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or _TYPES.get(status, "server_error")
        self.headers = headers


def not_found(what: str, object_id: str, param: str = "id") -> APIError:
    # Echo only a bounded, printable prefix of the client's id.
    shown = "".join(ch for ch in object_id[:80] if ch.isprintable())
    return APIError(404, f"No such {what}: '{shown}'", code=f"{what.replace(' ', '_')}_not_found", param=param)


def error_json(status: int, message: str, *, type_: str | None = None, code: str | None = None,
               param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse.model_validate({"error": {
        "message": message, "type": type_ or _TYPES.get(status, "server_error"), "param": param, "code": code}})
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_json(exc.status, exc.message, type_=exc.type, code=exc.code, param=exc.param,
                      headers=exc.headers)


def _json_position(body: bytes, offset: int) -> str:
    before = body[:offset]
    line_start = before.rfind(b"\n") + 1
    lines = before.count(b"\n") + 1
    return f"line {lines}, column {offset - line_start + 1}"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        # FastAPI puts the character offset where a field name belongs: say where, and name no field.
        loc = tuple(first.get("loc", ()))
        offset = loc[-1] if loc and isinstance(loc[-1], int) else 0
        ctx = first.get("ctx")
        reason = str(ctx.get("error", "malformed JSON")) if isinstance(ctx, dict) else "malformed JSON"
        where = _json_position(await request.body(), offset)
        return error_json(400, f"The request body is not valid JSON: {reason} at {where}.", code="invalid_json")
    param = _location(tuple(first.get("loc", ())))
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return error_json(400, message, code="invalid_request", param=param or None)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_json(exc.status_code, str(exc.detail), headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The message may quote user data: log the type and the route only.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_json(500, "internal server error", type_="server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
