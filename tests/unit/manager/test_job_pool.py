"""The engine workers' pool: jobs run, on at most `size` threads; a failing job does not end its thread."""

from __future__ import annotations

import threading

import pytest

from pyswarm.manager.workers import JobPool


def test_jobs_run_on_at_most_size_threads_and_survive_a_failing_job() -> None:
    pool = JobPool(3, "test")
    release = threading.Event()
    lock = threading.Lock()
    ran: list[int] = []
    threads: set[str] = set()
    running = [0, 0]  # now, most at once

    def job(n: int) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
            threads.add(threading.current_thread().name)
        release.wait(5)
        with lock:
            running[0] -= 1
            ran.append(n)
        if n % 4 == 0:
            raise RuntimeError("a job that fails")

    for n in range(12):
        pool.submit(job, n)
    release.set()
    deadline = threading.Event()
    for _ in range(100):
        with lock:
            if len(ran) == 12:
                break
        deadline.wait(0.05)
    assert sorted(ran) == list(range(12))
    assert running[1] == 3 and len(threads) == 3
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(job, 99)


def test_shutdown_drops_the_jobs_not_started() -> None:
    pool = JobPool(1, "test")
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def first() -> None:
        started.set()
        release.wait(5)
        ran.append("first")

    pool.submit(first)
    pool.submit(ran.append, "second")
    assert started.wait(5)
    pool.shutdown()
    release.set()
    threading.Event().wait(0.2)
    assert ran == ["first"]


def test_an_idle_thread_takes_the_next_job() -> None:
    pool = JobPool(4, "test")
    names: list[str] = []
    for _ in range(5):
        done = threading.Event()

        def job(done: threading.Event = done) -> None:
            names.append(threading.current_thread().name)
            done.set()

        pool.submit(job)
        assert done.wait(5)
        threading.Event().wait(0.05)  # the thread is back to waiting for a job
    pool.shutdown()
    assert len(set(names)) == 1, names  # one job at a time needs one thread
