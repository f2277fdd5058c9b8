"""The cluster as a whole: info, every task, the networks, and the long poll on changes."""

import asyncio
import contextlib
import logging
import threading
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request

from pyswarm.manager.api.auth import Client, Reader, State
from pyswarm.manager.api.errors import documented
from pyswarm.manager.api.responses import InfoOut, IngressPortOut, NetworkOut, TaskOut, WaitOut, task_out
from pyswarm.manager.state import ClusterState

router = APIRouter()
log = logging.getLogger(__name__)


@router.get("/info", response_model=InfoOut, responses=documented())
def info(_: Client, read: Reader) -> InfoOut:
    return InfoOut(**asdict(read.info()))


@router.get("/tasks", response_model=list[TaskOut], responses=documented())
def tasks(_: Client, read: Reader) -> list[TaskOut]:
    return [task_out(t) for t in read.tasks()]


@router.get("/events/wait", response_model=WaitOut, responses=documented())
async def wait(
    request: Request,
    _: Client,
    state: State,
    seen: Annotated[int, Query(ge=0)] = 0,
    timeout: Annotated[float, Query(ge=0, le=30)] = 10.0,
) -> WaitOut:
    """Long poll: returns when the cluster state changes after `seen`, or at the timeout."""
    return WaitOut(counter=await _feed(request, state).wait(seen, timeout))


@router.get("/networks", response_model=list[NetworkOut], responses=documented())
def networks(_: Client, read: Reader) -> list[NetworkOut]:
    nodes = read.nodes()
    synced = sorted(n.hostname for n in nodes if n.ingress_synced)
    unsynced = sorted(n.hostname for n in nodes if not n.ingress_synced)
    ports = {
        f"{port.published}/{port.protocol}": IngressPortOut(
            service=port.service_name,
            endpoints=[f"{e.node_addr}:{e.host_port}" for e in port.endpoints],
            synced_nodes=synced,
            unsynced_nodes=unsynced,
        )
        for port in read.mesh_ports()
    }
    cluster_id = read.info().cluster_id
    return [NetworkOut(id=cluster_id[:12], name="ingress", driver="overlay", scope="swarm", node="", ports=ports)]


# --- the long poll, without a thread per waiter -------------------------------------------------------------
# A `def` route runs on FastAPI's thread pool (40 threads, shared by every `def` route): a long poll there held
# one for up to 30 s, and 40 of them stalled every other call. Waiters now await a future on the event loop;
# one thread per app waits on the state for all of them (while any wait) and wakes them on their loop.

_FEED_LOCK = threading.Lock()


class ChangeFeed:
    """The state's change counter for async waiters. The thread runs while someone waits, and stops when no one
    has waited for POLL seconds; the counter it saw is only trusted while it runs."""

    POLL = 1.0
    FIRST_LOOK = 30.0  # the most a waiter waits for the thread's first look (the state lock may be held)

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._counter: int | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int]]] = []
        self._running = False

    async def wait(self, seen: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[int] = loop.create_future()
            with self._lock:
                counter = self._counter
                if counter is not None and counter != seen:
                    return counter
                self._waiters.append((loop, future))
                if not self._running:
                    self._running = True
                    threading.Thread(target=self._watch, name="events-wait", daemon=True).start()
            remaining = max(0.0, deadline - loop.time())
            try:
                counter = await asyncio.wait_for(future, remaining if counter is not None else self.FIRST_LOOK)
            except TimeoutError:
                return seen  # no change within the timeout
            finally:
                with self._lock, contextlib.suppress(ValueError):  # resolved: no longer listed
                    self._waiters.remove((loop, future))
            if counter != seen or loop.time() >= deadline:
                return counter

    def _watch(self) -> None:
        last = -1  # not a counter: the first look returns at once
        try:
            while True:
                counter = self.state.wait_for_change(last, self.POLL)
                with self._lock:
                    if counter != last:
                        last = self._counter = counter
                        waiters, self._waiters = self._waiters, []
                        for loop, future in waiters:
                            _resolve_soon(loop, future, counter)
                    elif not self._waiters:
                        self._running, self._counter = False, None  # a new waiter starts a new thread
                        return
        except Exception:
            log.exception("the change feed of /events/wait failed: its waiters get their timeout")
            with self._lock:
                self._running, self._counter = False, None


def _resolve_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[int], counter: int) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(counter)

    with contextlib.suppress(RuntimeError):  # that loop is closed: its waiter is gone
        loop.call_soon_threadsafe(resolve)


def _feed(request: Request, state: ClusterState) -> ChangeFeed:
    with _FEED_LOCK:
        feed: ChangeFeed | None = getattr(request.app.state, "change_feed", None)
        if feed is None or feed.state is not state:
            feed = request.app.state.change_feed = ChangeFeed(state)
        return feed
