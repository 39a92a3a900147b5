"""What a handler asks FastAPI for: the process's runtime and the request's caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.runtime import ServerRuntime
from server.tenancy import Caller


async def runtime(request: Request) -> ServerRuntime:
    """The runtime ``create_app`` put on ``app.state`` (async: a plain function would cost a thread hop)."""
    return request.app.state.runtime


async def caller(request: Request) -> Caller:
    """Who sent the request: set by ``BearerAuth`` on every route but the public ones."""
    return request.state.caller


Runtime = Annotated[ServerRuntime, Depends(runtime)]
RequestCaller = Annotated[Caller, Depends(caller)]
