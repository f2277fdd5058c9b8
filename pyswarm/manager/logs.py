"""`service logs`: the interleaved output of a service's tasks that have containers, each line prefixed like
docker's (`web.1.<task id>@node-02    | `), read from the engines by one thread per task. Tasks that ended keep
their stopped container until they leave the task history, so a crash's last words are here too.

The lines go through a bounded buffer to the client, which takes them with `async for`: a client waiting for
the next line holds no thread. A stream ends when every task's log ends, or when it is closed (the client went
away): its readers stop at their engine's next chunk, or at once where the engine's stream can be closed from
another thread (an iterator with close(), such as the docker SDK's CancellableStream; not a generator, whose
close() cannot interrupt a read in another thread). A stream holds its place among the `max_streams` until its
readers have ended, so abandoned streams cannot pile up threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyswarm.drivers.engine import EngineError
from pyswarm.manager.errors import ManagerError
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import LOG_LINES_BUFFERED
from pyswarm.manager.state import ClusterState
from pyswarm.model import Node, Service, Task
from pyswarm.planners.containers import task_name

# Each stream holds one reader thread per task (and, over SSH, a channel per task): 32 streams at once is more
# than the operators of one swarm watch, and bounds what abandoned `logs -f` can hold.
MAX_LOG_STREAMS = 32
READER_THREAD = "service-logs"  # the name of every reader thread starts with this
_BATCH = 256  # lines sent to the client in one write, at most
_PUT_WAIT = 0.2  # how often a reader blocked on a full buffer looks whether the stream was closed


@dataclass(frozen=True)
class LogOptions:
    """`service logs`' flags: --tail (None: all), -f, --since (unix time), -t, and --no-task-ids (False)."""

    tail: int | None = None
    follow: bool = False
    since: float | None = None
    timestamps: bool = False
    task_ids: bool = True


class LogStreamsBusy(ManagerError):
    """As many log streams are open as the manager serves at once."""


class ServiceLogs:
    def __init__(
        self, state: ClusterState, links: NodeLinks, connector: EngineConnector, max_streams: int = MAX_LOG_STREAMS
    ) -> None:
        self.state = state
        self.links = links
        self.connector = connector
        self.max_streams = max_streams
        self._open = 0
        self._open_lock = threading.Lock()

    def open(self, service: Service, options: LogOptions) -> LogStream:
        """A stream of the service's logs; its readers start when it is first iterated. Close it when done (the
        iteration closes it when it ends or is cancelled). Raises LogStreamsBusy at `max_streams`."""
        with self._open_lock:
            if self._open >= self.max_streams:
                raise LogStreamsBusy(
                    f"{self._open} log streams are open, the most the manager serves at once: "
                    "try again when one of them ends"
                )
            self._open += 1
        try:
            with self.state.lock:
                sources = [
                    (t, self.links.get(t.node_id), self.state.nodes.get(t.node_id))
                    for t in self.state.tasks_by_service.get(service.id, {}).values()
                    if t.container_id
                ]
        except BaseException:
            self._closed()
            raise
        readers = [(task, link, node) for task, link, node in sources if link is not None and node is not None]
        readers.sort(key=lambda item: (item[0].slot, item[0].node_id, item[0].created_at))
        return LogStream(self.connector, service, readers, options, self._closed)

    def open_streams(self) -> int:
        return self._open

    def _closed(self) -> None:
        with self._open_lock:
            self._open -= 1


class LogStream:
    """One client's logs: a reader thread per task puts lines in a bounded buffer; `async for` takes them."""

    def __init__(
        self,
        connector: EngineConnector,
        service: Service,
        readers: list[tuple[Task, NodeLink, Node]],
        options: LogOptions,
        on_close: Callable[[], None],
    ) -> None:
        self.connector = connector
        self.service = service
        self.readers = readers
        self.options = options
        self._on_close = on_close
        self._lines: queue.Queue[bytes | None] = queue.Queue(maxsize=LOG_LINES_BUFFERED)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._released = False
        self._running = 0  # reader threads not yet ended
        self._engine_streams: list[Iterator[bytes]] = []
        self._wake: Callable[[], None] = lambda: None
        self._asleep = False  # the client waits for a line: the next reader to put one wakes it

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    def close(self) -> None:
        """Stop the readers: at their engine's next chunk, or at once where its stream can be closed. The
        stream's place is freed when the last of them has ended. Safe to call more than once, from any thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            streams = list(self._engine_streams)
        self._stop.set()
        for stream in streams:
            _interrupt(stream)
        self._release_when_done()

    def _release_when_done(self) -> None:
        with self._lock:
            if not self._closed or self._running or self._released:
                return
            self._released = True
        self._on_close()

    async def _chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: no one reads any more
                loop.call_soon_threadsafe(wake.set)

        self._wake = notify
        live = self._start_readers()
        try:
            while live:
                batch: list[bytes] = []
                while len(batch) < _BATCH:
                    try:
                        item = self._lines.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        live -= 1
                    else:
                        batch.append(item)
                if batch:
                    yield b"".join(batch)
                    continue
                wake.clear()
                self._asleep = True  # set before looking: a line put after the look sees it and wakes us
                if live and self._lines.empty():
                    await wake.wait()
                self._asleep = False
        finally:
            self.close()

    def _start_readers(self) -> int:
        started = 0
        for task, link, node in self.readers:
            with self._lock:
                if self._closed:
                    break
                self._running += 1
            reader = threading.Thread(
                target=self._read, args=(task, link, node), name=f"{READER_THREAD} {task.id[:12]}", daemon=True
            )
            try:
                reader.start()
            except RuntimeError:  # no more threads: the stream ends with the readers it has
                with self._lock:
                    self._running -= 1
                break
            started += 1
        return started

    def _read(self, task: Task, link: NodeLink, node: Node) -> None:
        name = (
            f"{task_name(self.service, task)}.{task.id[:12]}"
            if self.options.task_ids
            else task_name(self.service, task)
        )
        prefix = f"{name}@{node.hostname}    | ".encode()
        stream: Iterator[bytes] | None = None
        opts = self.options
        try:
            stream = self.connector.engine(link).logs(
                task.container_id, opts.tail, opts.follow, since=opts.since, timestamps=opts.timestamps
            )
            with self._lock:
                if self._closed:
                    return
                self._engine_streams.append(stream)
            buffer = b""
            for chunk in stream:
                if self._stop.is_set():
                    return
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    if not self._put(prefix + line + b"\n"):
                        return
            if buffer:
                self._put(prefix + buffer + b"\n")
        except EngineError as exc:
            self._put(prefix + f"error reading logs: {exc}\n".encode())
        except Exception:
            if not self._stop.is_set():
                raise
            # closed under it (see _interrupt): the client is gone
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    getattr(stream, "close", lambda: None)()  # a generator: closes the engine's response
            self._put(None)
            with self._lock:
                self._running -= 1
            self._release_when_done()

    def _put(self, item: bytes | None) -> bool:
        """Into the buffer, waiting while it is full; False once the stream is closed."""
        while not self._stop.is_set():
            try:
                self._lines.put(item, timeout=_PUT_WAIT)
            except queue.Full:
                continue
            if self._asleep:  # one wake-up per wait, not one per line
                self._asleep = False
                self._wake()
            return True
        return False


def _interrupt(stream: Any) -> None:
    """Close an engine's log stream from another thread than its reader's, where that is safe: an iterator with
    close() that is not a generator (closing a running generator raises), such as the docker SDK's
    CancellableStream, whose close() shuts its socket and so ends the reader's blocked read."""
    if inspect.isgenerator(stream):
        return
    with contextlib.suppress(Exception):
        stream.close()
