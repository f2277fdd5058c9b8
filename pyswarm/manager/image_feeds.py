"""One image stream fed to several nodes' loads at once (`pyswarm image push`), in bounded memory.

Each node has a thread that sends its load's body from a queue of at most FEED_QUEUE_PIECES pieces; the reader
puts every piece (the same bytes object) in each queue, so the slowest node sets the pace and the whole feed
holds about FEED_QUEUE_PIECES pieces. A node whose load fails is dropped and the others go on; one that takes
no data for FEED_STALL_TIMEOUT seconds is cut off. Cutting a load off mid-stream makes its engine drop what it
got: no node is left with half an image.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyswarm.drivers.engine import Engine, EngineError
from pyswarm.manager.settings import FEED_QUEUE_PIECES, FEED_STALL_TIMEOUT


@dataclass
class FeedResult:
    """What became of one node's load of a fanned-out stream."""

    node_id: str
    hostname: str
    error: str = ""  # empty: loaded
    loaded: list[str] = field(default_factory=list)  # what the engine loaded ("busybox:latest")
    seconds: float = 0.0


def fan_out(feeds: list[Feed], chunks: Iterable[bytes]) -> list[FeedResult]:
    """Feed chunks to every feed; their results. If chunks raises (the upload ended early), every load is
    aborted and the exception propagates."""
    for feed in feeds:
        feed.start()
    try:
        for chunk in chunks:
            live = [feed for feed in feeds if not feed.done]
            if not live:
                break  # every node failed: no point reading the rest
            for feed in live:
                feed.put(chunk)
    except BaseException as exc:
        for feed in feeds:
            feed.abort(f"the upload ended early: {exc or type(exc).__name__}")
        for feed in feeds:
            feed.join()
        raise
    for feed in feeds:
        feed.put(None)
    for feed in feeds:
        feed.join()
    return [feed.result for feed in feeds]


ABORTED_JOIN = 1.0  # seconds
_END = object()
_ABORT = object()


class Feed:
    """One node's load of a fanned-out stream: a thread that sends what its bounded queue gets."""

    def __init__(self, result: FeedResult, connect: Callable[[], Engine] | None) -> None:
        self.result = result
        self.connect = connect
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=FEED_QUEUE_PIECES)
        self.finished = threading.Event()
        self.aborted = ""
        self.thread = threading.Thread(target=self._run, name=f"image-feed-{result.hostname}"[:40], daemon=True)
        if connect is None:
            self.finished.set()  # refused before it began: result.error says why

    @property
    def done(self) -> bool:
        return self.finished.is_set() or bool(self.aborted)

    def start(self) -> None:
        if self.connect is not None:
            self.thread.start()

    def put(self, piece: bytes | None) -> None:
        """Queue a piece (None: the end), waiting while the queue is full, unless the node is done or stalls."""
        item = _END if piece is None else piece
        deadline = time.monotonic() + FEED_STALL_TIMEOUT
        while not self.done:
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if time.monotonic() > deadline:
                    self.abort(f"the node took no data for {FEED_STALL_TIMEOUT:g} s: cut off")
                    return

    def abort(self, why: str) -> None:
        """Stop this node's load: what it has not sent is dropped, and its request is cut (the engine drops
        the partial image)."""
        if self.finished.is_set():
            return
        self.aborted = self.result.error = why
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_ABORT)

    def join(self) -> None:
        """Wait for the load to end; for one cut off, only briefly: its thread ends when its send times out, and
        the others' results need not wait for that."""
        if self.thread.is_alive():
            self.thread.join(ABORTED_JOIN if self.aborted else None)

    def _pieces(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise EngineError(self.aborted)
            yield item

    def _run(self) -> None:
        began = time.monotonic()
        assert self.connect is not None
        engine: Engine | None = None
        try:
            engine = self.connect()
            self.result.loaded = engine.load(self._pieces())
        except Exception as exc:
            self.result.error = self.aborted or str(exc) or type(exc).__name__
        finally:
            self.result.seconds = round(time.monotonic() - began, 3)
            self.finished.set()
            if engine is not None:
                engine.close()
