"""The fast paths made for scale keep their meaning: ids made in batches, task ports encoded without
json.dumps, the background task writer letting API writes in between its parts, and the scheduler's
counts of placed tasks."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from pyswarm.manager.ids import new_id
from pyswarm.manager.store import SqliteStore, task_from_row, task_row
from pyswarm.model import Node, NodeStatus, PortConfig, PublishMode, Service, ServiceSpec, Task, TaskState
from pyswarm.planners.scheduler import schedule


def test_ids_are_unique_across_threads_and_look_like_swarms() -> None:
    made: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        out.extend(new_id() for _ in range(2000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for out in made for i in out]
    assert len(set(ids)) == len(ids) == 8000
    assert all(re.fullmatch(r"[a-z0-9]{25}", i) for i in ids)


def test_task_ports_round_trip_plain_and_odd_keys() -> None:
    for ports in ({}, {"80/tcp": 32768}, {"80/tcp": 32768, "53/udp": 40000}, {'we"ird': 1, "80/tcp": 2}):
        task = Task(id="t1", service_id="s1", slot=1, host_ports=dict(ports))
        assert task_from_row(task_row(task)).host_ports == ports


def test_the_task_writer_lets_an_api_write_in_between_its_parts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    rows = [task_row(Task(id=f"t{i}", service_id="s1", slot=i)) for i in range(4000)]
    done: list[float] = []
    original = store._upsert_tasks
    started = threading.Event()

    def slow_upsert(part: list) -> None:  # type: ignore[type-arg]
        started.set()
        time.sleep(0.05)
        original(part)

    store._upsert_tasks = slow_upsert  # type: ignore[method-assign]
    writer = threading.Thread(target=store.write_task_rows, args=(rows, [], 100))  # 40 parts, ~2 s
    writer.start()
    started.wait(5)
    began = time.monotonic()
    store.write(services=[Service(id="s1", spec=ServiceSpec(name="web", image="nginx"))])
    done.append(time.monotonic() - began)
    writer.join(10)
    assert done[0] < 1.0  # one part, not the whole batch
    snapshot = store.load()
    assert len(snapshot.tasks) == 4000 and "s1" in snapshot.services


def test_placed_tasks_count_as_before() -> None:
    nodes = [Node(id=f"n{i}", hostname=f"h{i}", engine_url="x", addr="a", status=NodeStatus.READY) for i in range(3)]
    web = Service(id="web", spec=ServiceSpec(name="web", image="x", replicas=2))
    host = Service(
        id="host",
        spec=ServiceSpec(name="host", image="x", ports=(PortConfig(published=80, target=80, mode=PublishMode.HOST),)),
    )
    services = {"web": web, "host": host}
    placed = [
        Task(id="a", service_id="web", slot=1, node_id="n0", state=TaskState.RUNNING),
        Task(id="b", service_id="web", slot=2, node_id="n0", state=TaskState.FAILED),  # ended: not counted
        # stopping: holds its host port, not counted toward totals
        Task(id="c", service_id="host", slot=1, node_id="n1", state=TaskState.RUNNING,
             desired_state=TaskState.SHUTDOWN),
    ]  # fmt: skip
    pending = [
        Task(id="w3", service_id="web", slot=3, state=TaskState.PENDING),
        Task(id="h2", service_id="host", slot=2, state=TaskState.PENDING),
        Task(id="h3", service_id="host", slot=3, state=TaskState.PENDING),
    ]
    result = schedule(pending, services, nodes, placed)
    assert result.assignments["w3"] in ("n1", "n2")  # n0 holds a web task already
    assert {result.assignments["h2"], result.assignments["h3"]} == {"n0", "n2"}  # port 80 busy on n1
