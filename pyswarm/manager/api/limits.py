"""Limits before work: what the API refuses before it reads a request body, and the server's connection limits.

`Limits` is a pure ASGI middleware (nothing is buffered: Starlette's BaseHTTPMiddleware would read the body
first). When the app asks for the body, before a byte of it is read, it answers
- 401 when the route takes a token and the bearer token is no valid credential at all. The routes still check
  which credential it is (403) and validate the input (422), as before;
- 413 to a declared Content-Length over MAX_BODY; a streamed (chunked) body is counted as it comes, and gets
  413 once past MAX_BODY, without reading further.
A response that starts before the request's body was all received closes the connection (`Connection:
close`), so a refused 10 GB upload is not read to its end. Unknown paths and methods still get the router's
404 and 405 (with or without a token), which read no body.

`server_limits()` are the arguments for uvicorn.Config: a connection cap, a deadline for each request's head,
the keep-alive timeout and the size of a request head.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from fastapi import HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyswarm.manager.api.auth import bearer, credential, manager_of

log = logging.getLogger(__name__)

# What the request models accept at their limits, as JSON in ASCII: a node add with TLS files is ~200 KiB (three
# PEM files of at most 65,536 characters, TlsIn); a node update ~4.2 MiB (1,000 labels of 4 KiB, label_add);
# a service create or update ~9.3 MiB (1,000 labels and 1,000 env entries of 4 KiB, 256 arguments of 4 KiB).
# 16 MiB fits the largest with room, so no body the API would accept is refused for its size, and the API's
# own validation (422) still answers every smaller one; a bigger body is not a request of ours. Only clients
# with a valid token get this far: without one, the answer is 401 before a byte of the body is read.
MAX_BODY = 16 * 1024 * 1024

# How long a client may take to send a request's head (request line and headers), from the moment the server
# waits for it: the connection is closed after that. Our clients send it in one packet; 10 s is generous for a
# slow link, and bounds how long a half-open connection (a slowloris) holds a file descriptor.
HEADER_TIMEOUT = 10.0
# An idle keep-alive connection is closed after this many seconds (uvicorn's default, said out loud): the CLI
# makes a few calls in a row, then goes.
KEEP_ALIVE = 5
# The most a request head may take (h11 buffers an incomplete head up to this). Ours are under 1 KiB (a path of
# at most ~300 bytes, a bearer token of ~70); 8 KiB is Apache's limit for one header line. It also bounds what
# an idle half-open connection makes the server hold: 8 KiB each, 4 MiB for 512 of them.
MAX_HEAD_BYTES = 8 * 1024


def max_connections() -> int:
    """Half the process's file descriptors (the soft RLIMIT_NOFILE), between 64 and 4096: the other half stays
    for what the manager itself opens (engine connections over SSH, the store, log streams). With systemd's
    default of 1024 that is 512 connections. Raise the limit before calling this to serve more."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 8192
    return max(64, min(4096, soft // 2))


def server_limits(
    *, header_timeout: float = HEADER_TIMEOUT, keep_alive: int = KEEP_ALIVE, connections: int | None = None
) -> dict[str, Any]:
    """The keyword arguments for uvicorn.Config that bound what idle, slow or numerous connections can hold.

    uvicorn's own `limit_concurrency` is not used: it counts idle connections too and answers 503 to the next
    request, so a slowloris would keep its file descriptors and refuse the valid clients. Instead, the protocol
    caps the open connections at accept, closing the oldest one that is waiting for a request head when the
    cap is reached, and closes a connection whose head is not complete `header_timeout` after the server began
    waiting for it (uvicorn has no such deadline: a connection that never sends a full head stays open).
    """
    return {
        "http": _limited_h11(header_timeout, connections or max_connections()),
        "timeout_keep_alive": keep_alive,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }


# --- the middleware --------------------------------------------------------------------------------------


def uncapped(endpoint: Any) -> Any:
    """Mark a route whose body is a stream of any size, read as it comes (`POST /images/load`): no MAX_BODY."""
    endpoint.uncapped_body = True
    return endpoint


class Limits:
    """Admits a request's body before the app reads it: a route that takes a token must have been given a valid
    one (401), and a declared Content-Length must be within the cap (413); a streamed body is counted as it
    comes (413 past the cap). The check runs when the app first asks for the body, so the router has already
    picked the route (`scope["route"]`): unknown paths and methods still get its 404 and 405, and routes that
    read no body still check their token in their dependencies, as before."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body
        self._takes_token: dict[int, bool] = {}  # by id() of the route: routes live as long as the app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self, scope, receive, send)
        await self.app(scope, exchange.receive, exchange.send)

    async def admit(self, scope: Scope, declared: int | None) -> None:
        """Raise the refusal of a body the app is about to read. FastAPI passes an HTTPException raised while
        it reads the body on to the app's error handlers, which answer `{"detail": ...}`."""
        if self._needs_token(scope.get("route")) and not await _valid_token(Request(scope)):
            raise HTTPException(401, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"})
        if declared is not None and declared > self.max_body and not self.uncapped(scope.get("route")):
            raise HTTPException(413, _too_large(self.max_body))

    def uncapped(self, route: object) -> bool:
        return getattr(getattr(route, "endpoint", None), "uncapped_body", False) is True

    def _needs_token(self, route: object) -> bool:
        if route is None:
            return True  # a body read outside a route we know: only with a valid token
        if id(route) not in self._takes_token:
            self._takes_token[id(route)] = isinstance(route, APIRoute) and _depends_on_credential(route.dependant)
        return self._takes_token[id(route)]


def _depends_on_credential(dependant: Dependant) -> bool:
    return any(dep.call is credential or _depends_on_credential(dep) for dep in dependant.dependencies)


async def _valid_token(request: Request) -> bool:
    """The same check as auth.credential, on the headers alone: the token is one the manager knows."""
    auth = await bearer(request)
    if not auth or not auth.credentials:
        return False
    return manager_of(request).credentials.token_role(auth.credentials) is not None


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None  # h11 refuses a malformed one before the app sees it
    return int(value)


def _too_large(limit: int) -> str:
    return f"the request body is larger than the limit of {limit / 2**20:g} MiB"


class _Exchange:
    """One request's receive and send: admits the body on the first read, counts it, and closes a connection
    whose body is left unread."""

    def __init__(self, limits: Limits, scope: Scope, receive: Receive, send: Send) -> None:
        self.limits = limits
        self.scope = scope
        self._receive = receive
        self._send = send
        headers = Headers(scope=scope)
        self.declared = _content_length(headers)
        self.body_done = not self.declared and "transfer-encoding" not in headers
        self.admitted = False
        self.received = 0
        self.started = False

    async def receive(self) -> Message:
        if not self.admitted and not self.started:
            await self.limits.admit(self.scope, self.declared)
            self.admitted = True
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.body_done = True
            if self.received > self.limits.max_body and not self.limits.uncapped(self.scope.get("route")):
                if self.started:  # a streaming response that listens for the disconnect: end it
                    return {"type": "http.disconnect"}
                raise HTTPException(413, _too_large(self.limits.max_body))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers", []))
            if not self.body_done and not any(name.lower() == b"connection" for name, _ in headers):
                # The rest of the body is not wanted: close rather than read it to its end.
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)


# --- the protocol ----------------------------------------------------------------------------------------

_warned_at = 0.0


def warn_cap(message: str) -> None:
    """At most one warning a minute: a flood of connections must not flood the log too."""
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= 60:
        _warned_at = now
        log.warning(message)


def _limited_h11(header_timeout: float, cap: int) -> type[asyncio.Protocol]:
    """The protocol class with these limits. Imported here, not at the top: the API's modules are imported by
    tools that never serve it."""
    from pyswarm.manager.api.h11_limited import LimitedH11Protocol

    return type("LimitedH11", (LimitedH11Protocol,), {"header_timeout": header_timeout, "cap": cap})
