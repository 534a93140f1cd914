"""The page itself (one file, no external scripts or fonts) and the health check."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from genlab.server.errors import error_responses
from genlab.server.state import ServerState, served

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return resources.files("genlab.server").joinpath("page.html").read_text(encoding="utf-8")


@router.get("/api/health", responses=error_responses())
def health(state: Annotated[ServerState, Depends(served)]) -> dict[str, Any]:
    """Up, and how many jobs are running or waiting."""
    return {"status": "ok", "jobs": state.queue.admitted}
