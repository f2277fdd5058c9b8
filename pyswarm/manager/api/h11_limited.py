"""uvicorn's h11 protocol with a deadline for each request head and a cap on open connections: what
server_limits (limits.py) serves with."""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from pyswarm.manager.api.limits import warn_cap


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a cap on open connections (the
    subclass that server_limits makes sets both)."""

    header_timeout = 10.0
    cap = 512
    _head_timer: asyncio.TimerHandle | None = None
    _idle_since = 0.0  # since when the connection waits for a request head (for the cap's choice)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        if len(self.connections) > self.cap and not self._close_oldest_idle():
            warn_cap(f"{self.cap} connections are open, none of them idle: refusing new ones")
            self.transport.close()
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_head():
            self._await_head()  # part of a head: the deadline runs from when the wait began, not reset
        else:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._idle_since = self.loop.time()  # uvicorn's keep-alive timeout runs until the next head starts

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _await_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self.transport.close()

    def _close_oldest_idle(self) -> bool:
        idle = [
            c for c in self.connections if c is not self and isinstance(c, LimitedH11Protocol) and c._waiting_for_head()
        ]
        if not idle:
            return False
        warn_cap(f"{self.cap} connections are open: closing the longest idle ones for new ones")
        min(idle, key=lambda c: c._idle_since).transport.close()
        return True
