"""MemoryEngine against the contract tests/integration/drivers/test_docker_engine.py checks on a real engine.

Where the in-memory double behaves otherwise than a real Docker Engine, the case is marked xfail(strict=True)
with the real engine's behaviour as its reason: it documents the difference, and fails the day it is gone."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from pyswarm.drivers.engine import ContainerEvent, EngineError, EngineHostUnreachable, EngineUnreachable, ImageNotFound
from pyswarm.drivers.memory_engine import MemoryEngine
from pyswarm.model import (
    LABEL_CLUSTER_ID,
    LABEL_TASK_ID,
    ContainerSpec,
    PortConfig,
    Protocol,
    PublishMode,
    Service,
    ServiceSpec,
    Task,
)
from pyswarm.planners.containers import container_spec

CLUSTER = "cluster-a"
FOREIGN = "cluster-b"
IMAGE = "nginx:latest"
PORTS = (PortConfig(8080, 80), PortConfig(18081, 81, protocol=Protocol.UDP, mode=PublishMode.HOST))
WAIT = 10.0


def differs(real_engine: str) -> pytest.MarkDecorator:
    """A case where MemoryEngine is not what a real engine is (real_engine says what that does). It must fail on
    an assertion (or a pytest.raises that did not raise), not crash."""
    return pytest.mark.xfail(strict=True, raises=(AssertionError, pytest.fail.Exception), reason=real_engine)


def task_spec(
    cluster_id: str = CLUSTER, image: str = IMAGE, ports: tuple[PortConfig, ...] = (), name: str = "web"
) -> ContainerSpec:
    service = Service(id=uuid.uuid4().hex[:25], spec=ServiceSpec(name=name, image=image, ports=ports))
    task = Task(id=uuid.uuid4().hex[:25], service_id=service.id, slot=1, node_id="n" * 25)
    return container_spec(service, task, cluster_id)


@pytest.fixture
def engine() -> Iterator[MemoryEngine]:
    engine = MemoryEngine("ssh://root@10.0.0.1", hostname="node-01")
    try:
        yield engine
    finally:
        engine.set_down(True)  # ends every event stream a test opened


class Collector:
    """Reads an event stream in a thread, until the engine goes down (the fixture's teardown)."""

    def __init__(self, engine: MemoryEngine, cluster_id: str, since: float | None) -> None:
        self.events: list[ContainerEvent] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(engine, cluster_id, since), daemon=True)
        self.thread.start()

    def _read(self, engine: MemoryEngine, cluster_id: str, since: float | None) -> None:
        try:
            for event in engine.events(cluster_id, since):
                with self.changed:
                    self.events.append(event)
                    self.changed.notify_all()
        except BaseException as exc:
            with self.changed:
                self.error = exc
                self.changed.notify_all()

    def wait(self, predicate: Callable[[list[ContainerEvent]], bool], timeout: float = WAIT) -> list[ContainerEvent]:
        with self.changed:
            ok = self.changed.wait_for(lambda: self.error is not None or predicate(self.events), timeout=timeout)
            assert self.error is None, f"event stream failed: {self.error!r}"
            assert ok, f"timed out; got {[(e.action, e.container_id[:12]) for e in self.events]}"
            return list(self.events)

    def saw(self, action: str, container_id: str) -> Callable[[list[ContainerEvent]], bool]:
        return lambda events: any(e.action == action and e.container_id == container_id for e in events)

    def _seen_within(self, predicate: Callable[[list[ContainerEvent]], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.events), timeout=timeout)

    def live(self, engine: MemoryEngine) -> None:
        """Until the stream is subscribed, events are lost: make canaries until one of their ends is read."""
        deadline = time.monotonic() + WAIT
        while True:
            canary = engine.run(task_spec(name="canary"))
            engine.remove(canary.id)
            if self._seen_within(self.saw("destroy", canary.id), 0.05):
                return
            assert time.monotonic() < deadline, "the event stream never started"


# ------------------------------------------------------------------------------------------------ run


def test_info_and_ping(engine: MemoryEngine) -> None:
    info = engine.info()
    assert info.hostname == "node-01" and info.id and info.api_version
    engine.ping()
    engine.check_host(1.0)


def test_run_returns_the_running_container_with_its_ports_and_address(engine: MemoryEngine) -> None:
    spec = task_spec(ports=PORTS)
    info = engine.run(spec)
    assert len(info.id) == 64 and info.name == spec.name
    assert info.task_id == spec.labels[LABEL_TASK_ID] and info.labels[LABEL_CLUSTER_ID] == CLUSTER
    assert spec.labels.items() <= info.labels.items()
    assert (info.status, info.exit_code, info.error) == ("running", 0, "")
    assert info.host_ports["81/udp"] == 18081
    assert 1024 < info.host_ports["80/tcp"] <= 65535
    assert set(info.host_ports) == {"80/tcp", "81/udp"}
    assert info.container_addr.count(".") == 3


@differs("a real engine's ContainerInfo has started_at (State.StartedAt); memory: ''")
def test_run_reports_when_the_container_started(engine: MemoryEngine) -> None:
    assert engine.run(task_spec()).started_at


def test_a_retried_run_adopts_our_container(engine: MemoryEngine) -> None:
    spec = task_spec(ports=PORTS[:1])
    first = engine.run(spec)
    again = engine.run(spec)
    assert again.id == first.id and again.status == "running"
    assert [c.id for c in engine.containers(CLUSTER)] == [first.id]


@differs("a real engine starts an exited container it adopts; memory returns it exited")
def test_adopting_an_exited_container_of_ours_starts_it_again(engine: MemoryEngine) -> None:
    spec = task_spec()
    first = engine.run(spec)
    engine.kill(first.id, exit_code=2)
    again = engine.run(spec)
    assert again.id == first.id and again.status == "running"


@differs(
    "a real engine refuses (EngineError: name taken by a container pyswarm did not create); memory adopts it",
)
@pytest.mark.parametrize("owner", ["another cluster", "not pyswarm"])
def test_a_name_taken_by_a_container_that_is_not_ours_is_not_adopted(engine: MemoryEngine, owner: str) -> None:
    spec = task_spec()
    labels = {**spec.labels, LABEL_CLUSTER_ID: FOREIGN} if owner == "another cluster" else {"app": "theirs"}
    theirs = engine.run(replace(spec, labels=labels))
    with pytest.raises(EngineError, match="taken by a container pyswarm did not create"):
        engine.run(spec)
    assert theirs.id not in {c.id for c in engine.containers(CLUSTER)}


def test_an_image_that_is_not_on_the_node_raises_image_not_found(engine: MemoryEngine) -> None:
    spec = task_spec(image="pyswarm-test/absent:latest")
    with pytest.raises(ImageNotFound, match="No such image"):
        engine.run(spec)
    assert engine.containers(CLUSTER) == []


@differs("a real engine refuses an invalid container name (400); memory takes any name")
def test_a_request_the_engine_refuses_is_an_engine_error(engine: MemoryEngine) -> None:
    with pytest.raises(EngineError):
        engine.run(replace(task_spec(), name="not a valid/name"))


# ------------------------------------------------------------------------------------------------ containers


def test_containers_lists_only_this_clusters_with_their_state(engine: MemoryEngine) -> None:
    running = engine.run(task_spec(ports=PORTS[:1]))
    exited = engine.run(task_spec(ports=PORTS[:1]))
    engine.kill(exited.id, exit_code=2)
    foreign = engine.run(task_spec(cluster_id=FOREIGN))
    ours = {c.id: c for c in engine.containers(CLUSTER)}
    assert set(ours) == {running.id, exited.id}
    listed = ours[running.id]
    assert (listed.name, listed.status, listed.task_id) == (running.name, "running", running.task_id)
    assert listed.host_ports == running.host_ports and listed.container_addr == running.container_addr
    assert (ours[exited.id].status, ours[exited.id].exit_code) == ("exited", 2)
    assert [c.id for c in engine.containers(FOREIGN)] == [foreign.id]
    assert engine.containers("nobody") == []


@differs("a real engine lists an exited container without address or host ports")
def test_an_exited_container_has_no_address_nor_host_ports(engine: MemoryEngine) -> None:
    exited = engine.run(task_spec(ports=PORTS[:1]))
    engine.kill(exited.id, exit_code=2)
    (listed,) = engine.containers(CLUSTER)
    assert (listed.container_addr, listed.host_ports) == ("", {})


def test_remove_removes_and_is_idempotent(engine: MemoryEngine) -> None:
    info = engine.run(task_spec())
    engine.remove(info.id, stop_timeout=2)
    assert engine.containers(CLUSTER) == []
    engine.remove(info.id)
    engine.remove("0" * 64)
    assert engine.run(task_spec()).id != info.id  # the name is free again


# ------------------------------------------------------------------------------------------------ events


def test_events_yield_die_and_destroy_of_this_clusters_containers_only(engine: MemoryEngine) -> None:
    stream = Collector(engine, CLUSTER, time.time())
    stream.live(engine)
    foreign = engine.run(task_spec(cluster_id=FOREIGN))
    engine.remove(foreign.id)
    killed = engine.run(task_spec())
    engine.kill(killed.id, exit_code=2)
    ours = engine.run(task_spec())
    engine.remove(ours.id)
    events = stream.wait(stream.saw("destroy", ours.id))

    assert [e.action for e in events if e.container_id == ours.id] == ["die", "destroy"]
    die = next(e for e in events if e.container_id == ours.id)
    assert die.exit_code == 0 and die.labels[LABEL_TASK_ID] == ours.task_id and die.labels[LABEL_CLUSTER_ID] == CLUSTER
    assert [e.exit_code for e in events if e.container_id == killed.id] == [2]
    assert not any(e.container_id == foreign.id for e in events)
    assert {e.action for e in events} <= {"die", "destroy", "oom"}


@differs("a real engine's event labels are the actor's attributes: also name, image")
def test_event_labels_carry_the_container_name_and_image(engine: MemoryEngine) -> None:
    stream = Collector(engine, CLUSTER, None)
    stream.live(engine)
    ours = engine.run(task_spec())
    engine.remove(ours.id)
    die = next(e for e in stream.wait(stream.saw("die", ours.id)) if e.container_id == ours.id)
    assert (die.labels.get("name"), die.labels.get("image")) == (ours.name, IMAGE)


@differs("a real engine replays events from `since`; memory ignores since")
def test_a_new_stream_with_since_replays_a_die_from_before_it_opened(engine: MemoryEngine) -> None:
    since = time.time()
    missed = engine.run(task_spec())
    engine.kill(missed.id, exit_code=2)
    stream = Collector(engine, CLUSTER, since)
    stream.wait(stream.saw("die", missed.id), timeout=1.0)


@differs("a real engine sends only destroy when removing an exited container")
def test_removing_an_exited_container_sends_no_second_die(engine: MemoryEngine) -> None:
    stream = Collector(engine, CLUSTER, None)
    stream.live(engine)
    exited = engine.run(task_spec())
    engine.kill(exited.id, exit_code=2)
    engine.remove(exited.id)
    events = stream.wait(stream.saw("destroy", exited.id))
    assert [e.action for e in events if e.container_id == exited.id] == ["die", "destroy"]


def test_the_event_stream_ends_unreachable_when_the_engine_goes_away(engine: MemoryEngine) -> None:
    stream = Collector(engine, CLUSTER, None)
    stream.live(engine)
    engine.set_down(True)
    stream.thread.join(WAIT)
    assert isinstance(stream.error, EngineUnreachable)


# ------------------------------------------------------------------------------------------------ logs


def test_logs_return_bytes(engine: MemoryEngine) -> None:
    info = engine.run(task_spec())
    assert b"".join(engine.logs(info.id, tail=None, follow=False))  # a canned line, not the container's output


@differs("a real engine raises EngineError (404) for logs of an unknown container")
def test_logs_of_an_unknown_container_are_an_error(engine: MemoryEngine) -> None:
    with pytest.raises(EngineError):
        b"".join(engine.logs("0" * 64, tail=None, follow=False))


# ------------------------------------------------------------------------------------------------ unreachable


def test_an_engine_that_does_not_answer_is_unreachable(engine: MemoryEngine) -> None:
    info = engine.run(task_spec())
    engine.set_down(True)
    for call in (
        engine.ping,
        engine.info,
        lambda: engine.containers(CLUSTER),
        lambda: engine.run(task_spec()),
        lambda: engine.remove(info.id),
        lambda: next(iter(engine.logs(info.id, tail=None, follow=False))),
        lambda: next(iter(engine.events(CLUSTER, None))),
    ):
        with pytest.raises(EngineUnreachable) as caught:
            call()
        assert not isinstance(caught.value, EngineHostUnreachable)
    engine.check_host(1.0)  # the engine is down, its host still answers
    engine.state.host_down = True
    with pytest.raises(EngineHostUnreachable):
        engine.check_host(1.0)
