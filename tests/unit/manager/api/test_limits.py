"""Limits before work, against the real app under uvicorn with `server_limits()` (plain HTTP on 127.0.0.1, in
this process, so its memory is this process's): a refused body is not read, idle and half-open connections
are closed and capped, and long polls and abandoned log streams neither hold threads nor delay other calls.

Throughout, a valid client calls /info and every call must answer within 1 s.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pyswarm.manager.api import create_app
from pyswarm.manager.api.limits import MAX_BODY, server_limits
from pyswarm.manager.logs import READER_THREAD
from pyswarm.manager.manager import Manager
from tests.helpers import wait_until
from tests.unit.inprocess import Cluster

MiB = 1024 * 1024
CHUNK = b"x" * (64 * 1024)
ANSWER_WITHIN = 1.0


class Server:
    """The app under uvicorn with server_limits(**limits), plain HTTP on 127.0.0.1, in a thread."""

    def __init__(self, manager: Manager, **limits: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(manager), lifespan="off", log_level="warning", access_log=False, **server_limits(**limits)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10, what="the server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def connections(self) -> int:
        return len(self.server.server_state.connections)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("limits") / "data")
    cluster.populate()
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> Iterator[Server]:
    with Server(cluster.manager) as server:
        yield server


def auth(cluster: Cluster) -> dict[str, str]:
    return {"Authorization": f"Bearer {cluster.token('client')}"}


def get(port: int, path: str, headers: dict[str, str], timeout: float = ANSWER_WITHIN) -> tuple[int, bytes, float]:
    """One request on a new connection: status, body and how long it took."""
    start = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - start
    finally:
        conn.close()


class Prober:
    """A valid client calling /info over and over, in a thread, recording how long each call took."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.times: list[float] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _, took = get(self.port, "/info", self.headers)
                self.times.append(took)
                if status != 200:
                    self.errors.append(f"status {status}")
            except OSError as exc:
                self.errors.append(repr(exc))
            time.sleep(0.05)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def check(self, at_least: int = 3) -> None:
        assert not self.errors, self.errors[:5]
        assert len(self.times) >= at_least, self.times
        assert max(self.times) < ANSWER_WITHIN, f"slowest /info: {max(self.times):.2f}s"


def rss() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def upload(port: int, head: bytes, body: Iterator[bytes], wait: float = 2.0) -> tuple[int, dict[str, str], bytes, int]:
    """Send a request head, then body pieces until the server answers (it may answer before the body is all
    sent, as a refusal should); then the answer: status, headers, body, and how many body bytes were sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sent = 0
    try:
        sock.sendall(head)
        for piece in body:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered: stop sending
            try:
                sock.sendall(piece)
            except OSError:
                break  # the server closed the connection: read what it said
            sent += len(piece)
        sock.settimeout(wait)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(), sent
    finally:
        sock.close()


def fixed(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield CHUNK


def chunked(total: int) -> Iterator[bytes]:
    for _ in range(total // len(CHUNK)):
        yield b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
    # never the last, empty chunk: the body does not end


def head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- bodies ----------------------------------------------------------------------------------------------


def test_a_200_mb_body_without_a_token_gets_401_before_it_is_read(cluster: Cluster, server: Server) -> None:
    get(server.port, "/info", auth(cluster))  # warm up: the first call's imports are not the body's cost
    before = rss()
    headers = {"Content-Type": "application/json", "Content-Length": str(200 * MiB)}
    results: list[tuple[int, dict[str, str], bytes, int]] = []
    sender = threading.Thread(
        target=lambda: results.append(upload(server.port, head("POST", "/services", headers), fixed(200 * MiB)))
    )
    with Prober(server.port, auth(cluster)) as prober:
        time.sleep(0.2)
        sender.start()
        sender.join(timeout=30)
        time.sleep(0.3)  # a few more calls after the refusal
    [(status, headers_out, body, sent)] = results
    assert status == 401, body
    assert body == b'{"detail":"missing or invalid token"}'
    assert headers_out["www-authenticate"] == "Bearer"
    assert headers_out["connection"] == "close"
    assert sent < 200 * MiB  # refused before it was all sent
    growth = rss() - before
    assert growth < 50 * MiB, f"the server's memory grew by {growth / MiB:.0f} MB"
    prober.check()


def test_a_declared_body_over_the_cap_gets_413_before_it_is_sent(cluster: Cluster, server: Server) -> None:
    headers = {**auth(cluster), "Content-Type": "application/json", "Content-Length": str(2 * MAX_BODY)}
    start = time.monotonic()
    status, headers_out, body, sent = upload(server.port, head("POST", "/services", headers), fixed(2 * MAX_BODY))
    assert status == 413, body
    assert b"the request body is larger than the limit of 16 MiB" in body
    assert headers_out["connection"] == "close"
    assert sent < MAX_BODY  # answered long before the body could have been read
    assert time.monotonic() - start < ANSWER_WITHIN


def test_a_chunked_body_over_the_cap_gets_413_once_past_it(cluster: Cluster, server: Server) -> None:
    headers = {**auth(cluster), "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    with Prober(server.port, auth(cluster)) as prober:
        status, headers_out, body, sent = upload(server.port, head("POST", "/services", headers), chunked(3 * MAX_BODY))
        time.sleep(0.3)
    assert status == 413, body
    assert b"the request body is larger than the limit" in body
    assert headers_out["connection"] == "close"
    assert MAX_BODY < sent < 2 * MAX_BODY  # counted as it came, refused soon after the cap
    prober.check(at_least=1)


def test_a_small_refused_body_keeps_the_401_and_a_valid_one_is_served(cluster: Cluster, server: Server) -> None:
    """No change for a valid client: a valid request is answered as before, on a connection kept alive."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=ANSWER_WITHIN)
    try:
        conn.request("POST", "/services", body=b"{}", headers={"Content-Type": "application/json"})
        refused = conn.getresponse()
        assert (refused.status, refused.read()) == (401, b'{"detail":"missing or invalid token"}')
        conn.request("POST", "/services", body=b"{}", headers={**auth(cluster), "Content-Type": "application/json"})
        invalid = conn.getresponse()
        assert invalid.status == 422 and invalid.getheader("connection") != "close", invalid.read()
        invalid.read()
        conn.request("GET", "/info", headers=auth(cluster))
        assert conn.getresponse().status == 200
    finally:
        conn.close()


# --- connections -----------------------------------------------------------------------------------------


def half_open(port: int, count: int) -> list[socket.socket]:
    """Connections that start a request and never finish it: half a request line, or a head without its end."""
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET /inf" if i % 2 else b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True  # reset


def test_300_half_open_connections_are_closed_at_the_header_timeout(cluster: Cluster) -> None:
    with Server(cluster.manager, header_timeout=2.0, keep_alive=1, connections=1000) as server:
        socks = half_open(server.port, 300)
        try:
            opened = time.monotonic()
            times = [get(server.port, "/info", auth(cluster))[2] for _ in range(10)]
            assert max(times) < ANSWER_WITHIN, times
            # a slow head that keeps sending a byte now and then is not given more time
            drip = half_open(server.port, 1)[0]
            for _ in range(3):
                time.sleep(0.3)
                drip.sendall(b"X")
            assert not any(closed_by_server(s) for s in socks[:10]), "closed before the timeout"
            wait_until(lambda: all(closed_by_server(s) for s in socks), timeout=5, what="the idle ones closed")
            assert time.monotonic() - opened < 2.0 + 3.0
            wait_until(lambda: closed_by_server(drip), timeout=3, what="the dripping one closed")
            wait_until(lambda: server.connections() == 0, timeout=3, what="no connection left")
            assert get(server.port, "/info", auth(cluster))[0] == 200
        finally:
            for sock in socks:
                sock.close()


def test_the_connection_cap_closes_the_oldest_idle_ones_for_valid_clients(cluster: Cluster) -> None:
    with Server(cluster.manager, header_timeout=30.0, connections=50) as server:
        socks = half_open(server.port, 300)
        try:
            times = [get(server.port, "/info", auth(cluster))[2] for _ in range(10)]
            assert max(times) < ANSWER_WITHIN, times
            wait_until(lambda: server.connections() <= 50, timeout=2, what="at most 50 connections")
            wait_until(lambda: sum(closed_by_server(s) for s in socks) >= 250, timeout=3, what="the oldest closed")
        finally:
            for sock in socks:
                sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(cluster: Cluster) -> None:
    with Server(cluster.manager, keep_alive=1) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=ANSWER_WITHIN)
        conn.request("GET", "/info", headers=auth(cluster))
        assert conn.getresponse().read()
        assert conn.sock is not None
        sock = conn.sock
        wait_until(lambda: closed_by_server(sock), timeout=3, what="the keep-alive connection closed")
        conn.close()


# --- long polls and log streams --------------------------------------------------------------------------


def start_requests(port: int, path: str, headers: dict[str, str], count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head("GET", path, headers))
        socks.append(sock)
    return socks


def threads_named(prefix: str) -> int:
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_60_long_polls_hold_no_thread_and_do_not_delay_info(cluster: Cluster, server: Server) -> None:
    status, body, _ = get(server.port, "/events/wait?timeout=0", auth(cluster))
    assert status == 200
    counter = int(body.decode().split(":")[1].strip("}"))
    socks = start_requests(server.port, f"/events/wait?seen={counter}&timeout=3", auth(cluster), 60)
    try:
        time.sleep(0.3)
        times = [get(server.port, "/info", auth(cluster))[2] for _ in range(10)]
        assert max(times) < ANSWER_WITHIN, times
        assert threads_named("events-wait") <= 1  # one thread waits for all of them
        for sock in socks:  # each answers at its timeout, with the counter it was given
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert (response.status, response.read()) == (200, b'{"counter":%d}' % counter)
    finally:
        for sock in socks:
            sock.close()


def test_a_long_poll_answers_when_the_state_changes(cluster: Cluster, server: Server) -> None:
    _, body, _ = get(server.port, "/events/wait?timeout=0", auth(cluster))
    counter = int(body.decode().split(":")[1].strip("}"))
    sock = start_requests(server.port, f"/events/wait?seen={counter}&timeout=20", auth(cluster), 1)[0]
    try:
        time.sleep(0.2)
        with cluster.manager.state.lock:
            cluster.manager.state.changed()
        sock.settimeout(2)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.read() == b'{"counter":%d}' % (counter + 1)
    finally:
        sock.close()


class QuietStream:
    """Like the docker SDK's CancellableStream on a quiet container: a line, then a read that blocks until
    close() (which, on the real one, shuts the socket from any thread)."""

    def __init__(self) -> None:
        self.first = True
        self.closed = threading.Event()

    def __iter__(self) -> QuietStream:
        return self

    def __next__(self) -> bytes:
        if self.first:
            self.first = False
            return b"hello\n"
        self.closed.wait()
        raise StopIteration

    def close(self) -> None:
        self.closed.set()


def quiet_logs(container_id: str, tail: int | None, follow: bool, **_: Any) -> Iterator[bytes]:
    return QuietStream()  # the SDK's stream itself, which can be closed from another thread


def chatty_logs(container_id: str, tail: int | None, follow: bool, **_: Any) -> Iterator[bytes]:
    while True:
        yield b"a line\n"
        time.sleep(0.02)


@contextlib.contextmanager
def engine_logs(cluster: Cluster, logs: Any) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for engine in cluster.engines.values():
            patch.setattr(engine, "logs", logs)
        yield


def read_some(sock: socket.socket, want: bytes, times: int = 1) -> bytes:
    """Read until `want` came `times` times (5 s at most)."""
    data = b""
    deadline = time.monotonic() + 5
    sock.settimeout(5)
    while data.count(want) < times:
        assert time.monotonic() < deadline, data[-500:]
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    return data


def test_an_abandoned_follow_stream_leaves_no_reader_thread(cluster: Cluster, server: Server) -> None:
    before = threads_named(READER_THREAD)
    with engine_logs(cluster, chatty_logs):
        sock = start_requests(server.port, "/services/web/logs?follow=true", auth(cluster), 1)[0]
        data = read_some(sock, b"a line\n", times=4)
        assert data.startswith(b"HTTP/1.1 200") and b"web.1." in data
        assert threads_named(READER_THREAD) == before + 2  # web has two tasks
        sock.close()
        wait_until(lambda: threads_named(READER_THREAD) == before, timeout=3, what="the readers gone")
        wait_until(lambda: cluster.manager.logs.open_streams() == 0, timeout=3, what="the stream closed")


def test_45_quiet_follow_streams_do_not_delay_info_and_end_with_their_clients(cluster: Cluster, server: Server) -> None:
    logs = cluster.manager.logs
    before = threads_named(READER_THREAD)
    with engine_logs(cluster, quiet_logs), pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "max_streams", 64)
        socks = start_requests(server.port, "/services/web/logs?follow=true", auth(cluster), 45)
        try:
            for sock in socks:
                read_some(sock, b"hello\n")
            assert threads_named(READER_THREAD) == before + 90
            times = [get(server.port, "/info", auth(cluster))[2] for _ in range(10)]
            assert max(times) < ANSWER_WITHIN, times
        finally:
            for sock in socks:
                sock.close()
        wait_until(lambda: threads_named(READER_THREAD) == before, timeout=5, what="the 90 readers gone")
        wait_until(lambda: logs.open_streams() == 0, timeout=3, what="the streams closed")


def test_log_streams_over_the_cap_get_503(cluster: Cluster, server: Server) -> None:
    logs = cluster.manager.logs
    with engine_logs(cluster, quiet_logs), pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "max_streams", 2)
        socks = start_requests(server.port, "/services/web/logs?follow=true", auth(cluster), 2)
        try:
            for sock in socks:
                read_some(sock, b"hello\n")
            status, body, took = get(server.port, "/services/web/logs?follow=true", auth(cluster))
            assert status == 503 and b"log streams are open" in body and took < ANSWER_WITHIN
        finally:
            for sock in socks:
                sock.close()
        wait_until(lambda: logs.open_streams() == 0, timeout=3, what="the streams closed")
    status, body, _ = get(server.port, "/services/web/logs", auth(cluster))  # the places are free again
    assert status == 200 and b"log line from" in body


def test_a_quiet_generator_stream_holds_its_place_until_its_next_line(cluster: Cluster, server: Server) -> None:
    """DockerEngine.logs is a generator: a read blocked in it cannot be interrupted from another thread, so its
    reader ends at the container's next line after the client left, and the stream keeps its place till then."""
    more = threading.Event()

    def generator_logs(container_id: str, tail: int | None, follow: bool, **_: Any) -> Iterator[bytes]:
        yield b"hello\n"
        more.wait()
        while True:
            yield b"more\n"
            time.sleep(0.02)

    logs = cluster.manager.logs
    before = threads_named(READER_THREAD)
    with engine_logs(cluster, generator_logs):
        sock = start_requests(server.port, "/services/web/logs?follow=true", auth(cluster), 1)[0]
        read_some(sock, b"hello\n", times=2)
        sock.close()
        time.sleep(0.3)
        assert threads_named(READER_THREAD) == before + 2 and logs.open_streams() == 1
        more.set()
        wait_until(lambda: threads_named(READER_THREAD) == before, timeout=3, what="the readers gone")
        wait_until(lambda: logs.open_streams() == 0, timeout=3, what="the place freed")
