"""How the API answers what it cannot do: every error is JSON ``{"error": "one line"}``, a 4xx for what the
client can change, a 500 (with no traceback or path: those go to the server's log) for a failure of the
server itself. The handlers are the app's (FastAPI routers have none); the routes raise."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from genlab.errors import GenlabError
from genlab.server.limits import Busy, Cancelled

INTERNAL = "the server failed on this request ({}); its log has the details"


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str


class Rejected(Exception):
    """A request that cannot be served as asked: 4xx with a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an endpoint may answer, all ``{"error": str}`` as JSON (spelt
    out: FastAPI would give a ``model`` the route's media type, image/png or text/event-stream)."""
    why = {
        400: "a host name this server does not answer, or a malformed body",
        403: "a cross-site request",
        404: "no such model (of this kind) here",
        413: "the request body is too large",
        415: "an upload of a type that is not an image",
        422: "a parameter out of range or of the wrong type",
        429: "too many requests from this client, or the server is busy",
        500: "the server failed (its log has the details)",
        503: "the request was cancelled: its client went away",
    }
    json_error = {"application/json": {"schema": ErrorBody.model_json_schema()}}
    return {s: {"description": why[s], "content": json_error} for s in (400, 413, 500, *statuses)}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` on one line, with anything that cannot be encoded (a lone surrogate echoed
    from a request) replaced: an error must never fail to be written."""
    text = " ".join(message.splitlines()).encode("utf-8", "replace").decode("utf-8")
    return JSONResponse({"error": text}, status_code=status, headers=headers)


async def _rejected(_: Request, e: Rejected) -> JSONResponse:
    return error_response(e.status, e.message, e.headers)


async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
    first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
    loc = list(first.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path"):  # where the field was, not which
        loc = loc[1:]
    where = ".".join(str(p) for p in loc)
    msg = str(first.get("msg")).removeprefix("Value error, ")
    return error_response(422, f"{where}: {msg}" if where else msg)


async def _http(_: Request, e: HTTPException) -> JSONResponse:
    return error_response(e.status_code, str(e.detail), e.headers)  # e.g. 405 keeps its Allow header


async def _unknown(_: Request, e: LookupError) -> JSONResponse:
    return error_response(404, str(e.args[0]) if e.args else "not found")


async def _genlab(_: Request, e: GenlabError) -> JSONResponse:
    return error_response(422, str(e))


async def _busy(_: Request, e: Busy) -> JSONResponse:
    return error_response(429, str(e), {"Retry-After": "5"})


async def _cancelled(_: Request, e: Cancelled) -> JSONResponse:
    return error_response(503, "the request was cancelled: its client went away")


async def _failed(_: Request, e: Exception) -> JSONResponse:
    # Starlette logs the traceback after this answer; the client gets one line without it.
    return error_response(500, INTERNAL.format(type(e).__name__))


def add_error_handlers(app: FastAPI) -> None:
    """Answer every exception a route raises as one line of JSON, with its status."""
    handlers = {
        Rejected: _rejected,
        RequestValidationError: _invalid,
        HTTPException: _http,
        LookupError: _unknown,
        GenlabError: _genlab,
        Busy: _busy,
        Cancelled: _cancelled,
        Exception: _failed,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
