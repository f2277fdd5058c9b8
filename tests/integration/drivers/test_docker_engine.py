"""DockerEngine, the real engine driver, against a real Docker Engine of the lab (node-01, over ssh:// as the
manager reaches it): run (and adoption of a container left by a lost reply), containers, remove, events (live,
and replayed with `since` after a reconnect), logs, and how failures are translated (ImageNotFound,
EngineUnreachable, EngineHostUnreachable, EngineError).

Every container made here is named after PREFIX and removed at the end of the module, whatever happens."""

from __future__ import annotations

import io
import ipaddress
import re
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

import docker
import pytest

from pyswarm.drivers.engine import (
    ContainerEvent,
    DockerEngine,
    EngineError,
    EngineHostUnreachable,
    EngineUnreachable,
    ImageNotFound,
)
from pyswarm.lab import Lab
from pyswarm.lab.config import LabNode
from pyswarm.model import (
    LABEL_CLUSTER_ID,
    LABEL_TASK_ID,
    ContainerInfo,
    ContainerSpec,
    PortConfig,
    Protocol,
    PublishMode,
    Service,
    ServiceSpec,
    Task,
)
from pyswarm.planners.containers import container_spec
from tests.unit.inprocess import closed_port

PREFIX = f"drvtest-{uuid.uuid4().hex[:8]}"  # every container name of this module starts with it
CLUSTER = f"cluster-{uuid.uuid4().hex[:12]}"
FOREIGN = f"foreign-{uuid.uuid4().hex[:12]}"  # another cluster on the same engine
IMAGE = "nginx:latest"
UDP_ECHO = "/usr/local/bin/udp-echo"
EXITS_AT_ONCE = (UDP_ECHO, "0")  # prints "udp-echo: bad port 0" to stderr and exits 2
PORTS = (PortConfig(8080, 80), PortConfig(18081, 81, protocol=Protocol.UDP, mode=PublishMode.HOST))
WAIT = 30.0


def task_spec(
    cluster_id: str = CLUSTER, command: tuple[str, ...] = (), image: str = IMAGE, ports: tuple[PortConfig, ...] = ()
) -> ContainerSpec:
    """A task's container as the manager would ask for it (planners.containers.container_spec)."""
    service = Service(
        id=uuid.uuid4().hex[:25],
        spec=ServiceSpec(
            name=f"{PREFIX}-{uuid.uuid4().hex[:6]}", image=image, command=command, ports=ports, stop_grace_period=2
        ),
    )
    task = Task(id=uuid.uuid4().hex[:25], service_id=service.id, slot=1, node_id="n" * 25)
    return container_spec(service, task, cluster_id)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def node(lab: Lab) -> LabNode:
    return lab.nodes[0]


@pytest.fixture(scope="module")
def raw(node: LabNode) -> Iterator[docker.APIClient]:
    """The same engine through its unix socket, bypassing the driver: to set up and to check behind its back."""
    client = docker.APIClient(base_url=node.docker_host, version="auto")
    try:
        yield client
    finally:
        for row in client.containers(all=True, filters={"name": PREFIX}):
            client.remove_container(row["Id"], force=True)
        left = client.containers(all=True, filters={"name": PREFIX})
        client.close()
        assert left == [], "containers of the test left behind"


@pytest.fixture(scope="module")
def bare_image(raw: docker.APIClient) -> Iterator[str]:
    """An image with no labels (and no files): imported from an empty archive."""
    archive = io.BytesIO()
    tarfile.open(fileobj=archive, mode="w").close()
    ref = f"{PREFIX}-bare:latest"
    raw.import_image_from_data(archive.getvalue(), repository=f"{PREFIX}-bare", tag="latest")
    try:
        yield ref
    finally:
        for row in raw.containers(all=True, filters={"ancestor": ref}):
            raw.remove_container(row["Id"], force=True)
        raw.remove_image(ref, force=True)


@pytest.fixture(scope="module")
def engine(node: LabNode, raw: docker.APIClient) -> Iterator[DockerEngine]:
    engine = DockerEngine(node.engine_url, timeout=30)
    try:
        yield engine
    finally:
        engine.close()


def state_of(raw: docker.APIClient, container_id: str) -> str:
    return str(raw.inspect_container(container_id)["State"]["Status"])


def wait_exited(raw: docker.APIClient, container_id: str) -> None:
    wait_for(lambda: state_of(raw, container_id) == "exited", f"container {container_id[:12]} to exit")


class Collector:
    """Reads an event stream in a thread. The stream never ends by itself: the thread stays blocked on it (a
    daemon, with its own engine) until the lab goes down."""

    def __init__(self, url: str, cluster_id: str, since: float | None) -> None:
        self.engine = DockerEngine(url, timeout=30)
        self.events: list[ContainerEvent] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(cluster_id, since), daemon=True)
        self.thread.start()

    def _read(self, cluster_id: str, since: float | None) -> None:
        try:
            for event in self.engine.events(cluster_id, since):
                with self.changed:
                    self.events.append(event)
                    self.changed.notify_all()
        except BaseException as exc:
            with self.changed:
                self.error = exc
                self.changed.notify_all()

    def wait(self, predicate: Callable[[list[ContainerEvent]], bool], what: str) -> list[ContainerEvent]:
        with self.changed:
            ok = self.changed.wait_for(lambda: self.error is not None or predicate(self.events), timeout=WAIT)
            assert self.error is None, f"event stream failed: {self.error!r}"
            assert ok, f"timed out waiting for {what}; got {[(e.action, e.container_id[:12]) for e in self.events]}"
            return list(self.events)

    def saw(self, action: str, container_id: str) -> Callable[[list[ContainerEvent]], bool]:
        return lambda events: any(e.action == action and e.container_id == container_id for e in events)


# ------------------------------------------------------------------------------------------------ run


def test_info_and_ping(engine: DockerEngine, node: LabNode) -> None:
    info = engine.info()
    assert info.hostname == node.name
    assert info.id and info.version and info.api_version and info.ncpu > 0 and info.memory > 0
    engine.ping()
    engine.check_host(2.0)


def test_run_returns_the_running_container_with_its_ports_and_address(
    engine: DockerEngine, raw: docker.APIClient, lab: Lab, node: LabNode
) -> None:
    spec = task_spec(ports=PORTS)
    info = engine.run(spec)

    assert isinstance(info, ContainerInfo)
    assert len(info.id) == 64 and info.name == spec.name
    assert info.task_id == spec.labels[LABEL_TASK_ID] and info.labels[LABEL_CLUSTER_ID] == CLUSTER
    assert spec.labels.items() <= info.labels.items()
    assert (info.status, info.exit_code, info.error) == ("running", 0, "")
    assert info.started_at
    assert info.host_ports["81/udp"] == 18081  # a host-mode port is bound as published
    assert 1024 < info.host_ports["80/tcp"] <= 65535  # an ingress port on a port the engine chose
    assert set(info.host_ports) == {"80/tcp", "81/udp"}
    assert ipaddress.ip_address(info.container_addr) in ipaddress.ip_network(node.bip, strict=False)
    assert state_of(raw, info.id) == "running"
    # It serves, at its address and at the host port the engine chose.
    for addr, port in ((info.container_addr, 80), ("127.0.0.1", info.host_ports["80/tcp"])):
        fetch = f"import urllib.request as u; print(u.urlopen('http://{addr}:{port}/', timeout=5).read().decode())"
        answer = lab.exec(node, [sys.executable, "-c", fetch], timeout=30).stdout
        assert answer.startswith("served-by "), answer


def test_a_retried_run_adopts_our_container_left_by_a_lost_reply(engine: DockerEngine, raw: docker.APIClient) -> None:
    spec = task_spec(ports=PORTS[:1])
    # The first run's create reached the engine, its reply did not: the container exists, created, not started.
    created = raw.create_container(IMAGE, name=spec.name, labels=spec.labels)["Id"]
    assert state_of(raw, created) == "created"

    info = engine.run(spec)  # the retry gets 409 Conflict on the name
    assert info.id == created and info.status == "running"
    assert state_of(raw, created) == "running"

    again = engine.run(spec)  # and a retry of a run that did succeed adopts the running container
    assert again.id == created and again.status == "running"
    assert [row["Id"] for row in raw.containers(all=True, filters={"name": spec.name})] == [created]


def test_adopting_an_exited_container_of_ours_starts_it_again(engine: DockerEngine, raw: docker.APIClient) -> None:
    spec = task_spec(command=EXITS_AT_ONCE)
    first = engine.run(spec)
    wait_exited(raw, first.id)

    again = engine.run(spec)

    assert again.id == first.id  # no second container: the exited one is started once more
    assert again.started_at != first.started_at
    assert raw.inspect_container(first.id)["State"]["StartedAt"] == again.started_at
    assert [row["Id"] for row in raw.containers(all=True, filters={"name": spec.name})] == [first.id]


@pytest.mark.parametrize("owner", ["another cluster", "not pyswarm", "no labels at all"])
def test_a_name_taken_by_a_container_that_is_not_ours_is_not_adopted(
    engine: DockerEngine, raw: docker.APIClient, bare_image: str, owner: str
) -> None:
    spec = task_spec()
    labels = {**spec.labels, LABEL_CLUSTER_ID: FOREIGN} if owner == "another cluster" else {"app": "theirs"}
    if owner == "no labels at all":  # an image without labels, a container without labels
        labels = {}
        theirs = raw.create_container(bare_image, command=["/x"], name=spec.name)["Id"]
    else:
        theirs = raw.create_container(IMAGE, name=spec.name, labels=labels)["Id"]

    with pytest.raises(EngineError, match="taken by a container pyswarm did not create") as refused:
        engine.run(spec)

    assert not isinstance(refused.value, EngineUnreachable)
    inspected = raw.inspect_container(theirs)
    assert inspected["State"]["Status"] == "created"  # not started, not touched
    assert (inspected["Config"]["Labels"] or {}).get(LABEL_CLUSTER_ID) == labels.get(LABEL_CLUSTER_ID)
    assert theirs not in {c.id for c in engine.containers(CLUSTER)}


def test_an_image_that_is_not_on_the_node_raises_image_not_found(engine: DockerEngine, raw: docker.APIClient) -> None:
    spec = task_spec(image=f"pyswarm-test/absent-{uuid.uuid4().hex[:8]}:latest")
    with pytest.raises(ImageNotFound, match="No such image"):
        engine.run(spec)
    assert raw.containers(all=True, filters={"name": spec.name}) == []  # nothing was created


def test_a_request_the_engine_refuses_is_an_engine_error(engine: DockerEngine, raw: docker.APIClient) -> None:
    spec = replace(task_spec(), name=f"{PREFIX} not a valid/name")
    with pytest.raises(EngineError, match=re.escape(engine.url)) as refused:
        engine.run(spec)
    assert not isinstance(refused.value, EngineUnreachable | ImageNotFound)
    assert "Invalid container name" in str(refused.value)


# ------------------------------------------------------------------------------------------------ containers


def test_containers_lists_only_this_clusters_with_their_state(engine: DockerEngine, raw: docker.APIClient) -> None:
    running = engine.run(task_spec(ports=PORTS[:1]))
    exited = engine.run(task_spec(command=EXITS_AT_ONCE, ports=PORTS[:1]))
    foreign = engine.run(task_spec(cluster_id=FOREIGN))
    unlabelled = raw.create_container(IMAGE, name=f"{PREFIX}-unlabelled")["Id"]
    wait_exited(raw, exited.id)

    ours = {c.id: c for c in engine.containers(CLUSTER)}

    assert {running.id, exited.id} <= set(ours)
    assert foreign.id not in ours and unlabelled not in ours
    assert all(c.labels[LABEL_CLUSTER_ID] == CLUSTER for c in ours.values())
    listed = ours[running.id]
    assert (listed.name, listed.status, listed.task_id) == (running.name, "running", running.task_id)
    assert listed.host_ports == running.host_ports and listed.container_addr == running.container_addr
    dead = ours[exited.id]
    # An exited container has no address and no host port any more (they went with its network endpoint).
    assert (dead.status, dead.exit_code, dead.container_addr, dead.host_ports) == ("exited", 2, "", {})
    theirs = engine.containers(FOREIGN)
    assert foreign.id in {c.id for c in theirs} and all(c.labels[LABEL_CLUSTER_ID] == FOREIGN for c in theirs)
    assert engine.containers(f"nobody-{uuid.uuid4().hex}") == []


def test_remove_stops_and_removes_and_is_idempotent(engine: DockerEngine, raw: docker.APIClient) -> None:
    info = engine.run(task_spec())
    began = time.monotonic()
    engine.remove(info.id, stop_timeout=2)
    assert time.monotonic() - began < 10
    assert info.id not in {c.id for c in engine.containers(CLUSTER)}
    assert raw.containers(all=True, filters={"id": info.id}) == []
    assert engine.inspect(info.id) is None
    engine.remove(info.id)  # gone already: no error
    engine.remove("0" * 64)


# ------------------------------------------------------------------------------------------------ events


def test_events_yield_die_and_destroy_of_this_clusters_containers_only(
    engine: DockerEngine, raw: docker.APIClient, node: LabNode
) -> None:
    since = time.time()
    stream = Collector(node.engine_url, CLUSTER, since)
    # A first container dies: once its die is read, the stream is live for what follows.
    canary = engine.run(task_spec(command=EXITS_AT_ONCE))
    stream.wait(stream.saw("die", canary.id), "the canary's die")

    foreign = engine.run(task_spec(cluster_id=FOREIGN))
    engine.remove(foreign.id, stop_timeout=2)
    ours = engine.run(task_spec())
    engine.remove(ours.id, stop_timeout=2)
    events = stream.wait(stream.saw("destroy", ours.id), "our container's destroy")

    mine = [e for e in events if e.container_id == ours.id]
    assert [e.action for e in mine] == ["die", "destroy"]
    die = mine[0]
    assert die.exit_code == 0  # nginx ends cleanly on the stop's SIGTERM
    assert die.labels[LABEL_TASK_ID] == ours.task_id and die.labels[LABEL_CLUSTER_ID] == CLUSTER
    # The event's "labels" are the actor's attributes: the container's labels plus docker's own keys.
    assert die.labels["name"] == ours.name and die.labels["image"] == IMAGE
    assert since <= die.time <= time.time()
    assert not any(e.container_id == foreign.id for e in events)  # another cluster's: filtered out
    assert {e.action for e in events} <= {"die", "destroy", "oom"}  # no create, start, stop, kill
    (canary_die,) = [e for e in events if e.container_id == canary.id]
    assert canary_die.exit_code == 2


def test_a_new_stream_with_since_replays_a_die_from_before_it_opened(
    engine: DockerEngine, raw: docker.APIClient, node: LabNode
) -> None:
    earlier = engine.run(task_spec(command=EXITS_AT_ONCE))
    wait_exited(raw, earlier.id)
    since = time.time()  # the manager's last event time when its stream broke
    missed = engine.run(task_spec(command=EXITS_AT_ONCE))
    wait_exited(raw, missed.id)

    stream = Collector(node.engine_url, CLUSTER, since)  # the reconnect
    events = stream.wait(stream.saw("die", missed.id), "the missed die, replayed")

    (die,) = [e for e in events if e.container_id == missed.id]
    assert die.exit_code == 2 and die.labels[LABEL_TASK_ID] == missed.task_id and die.time >= since
    assert not any(e.container_id == earlier.id for e in events)  # before `since`: not replayed
    # And the stream goes on live after the replay.
    engine.remove(missed.id, stop_timeout=2)
    events = stream.wait(stream.saw("destroy", missed.id), "the live destroy after the replay")
    # Removing a container that had exited already: a destroy, no second die.
    assert [e.action for e in events if e.container_id == missed.id] == ["die", "destroy"]


# ------------------------------------------------------------------------------------------------ logs


def test_logs_return_the_containers_output(engine: DockerEngine, raw: docker.APIClient) -> None:
    info = engine.run(task_spec(command=EXITS_AT_ONCE))
    wait_exited(raw, info.id)
    assert b"".join(engine.logs(info.id, tail=None, follow=False)) == b"udp-echo: bad port 0\n"
    assert b"".join(engine.logs(info.id, tail=1, follow=True)) == b"udp-echo: bad port 0\n"  # exited: it ends

    tested = engine.run(task_spec(command=("/usr/sbin/nginx", "-t")))  # two lines: syntax ok, test successful
    wait_exited(raw, tested.id)
    lines = b"".join(engine.logs(tested.id, tail=None, follow=False)).splitlines(keepends=True)
    assert len(lines) == 2 and b"test is successful" in lines[1], lines
    assert b"".join(engine.logs(tested.id, tail=1, follow=False)) == lines[1]
    with pytest.raises(EngineError):
        b"".join(engine.logs("0" * 64, tail=None, follow=False))


# ------------------------------------------------------------------------------------------------ unreachable


@pytest.mark.parametrize("scheme", ["ssh", "tcp"])
def test_an_engine_url_nothing_listens_on_is_unreachable(scheme: str, node: LabNode) -> None:
    port = closed_port()
    began = time.monotonic()
    with pytest.raises(EngineHostUnreachable, match="cannot reach"):
        DockerEngine(f"{scheme}://root@127.0.0.1:{port}" if scheme == "ssh" else f"tcp://127.0.0.1:{port}")
    with pytest.raises(EngineHostUnreachable, match="cannot reach"):
        DockerEngine(f"ssh://root@{node.addr}:{port}")  # the node's host is up; nothing there listens
    assert time.monotonic() - began < 10


def test_a_unix_socket_nothing_listens_on_is_unreachable() -> None:
    with pytest.raises(EngineUnreachable) as caught:
        DockerEngine(f"unix:///run/pyswarm-test-{uuid.uuid4().hex[:8]}/docker.sock")
    assert not isinstance(caught.value, EngineHostUnreachable)


def test_a_node_cut_off_the_network_fails_check_host_and_calls(lab: Lab) -> None:
    cut = lab.nodes[-1]
    engine = DockerEngine(cut.engine_url, timeout=3)
    try:
        engine.ping()
        engine.check_host(2.0)
        lab.cut(cut)
        began = time.monotonic()
        with pytest.raises(EngineHostUnreachable, match=f"cannot reach {cut.addr}:22"):
            engine.check_host(1.0)
        assert time.monotonic() - began < 3
        began = time.monotonic()
        with pytest.raises(EngineUnreachable):
            engine.ping()
        assert time.monotonic() - began < 15
        with pytest.raises(EngineHostUnreachable):
            DockerEngine(cut.engine_url, connect_timeout=1.0)
    finally:
        lab.restore()
        engine.close()
    wait_for(lambda: _answers(cut.engine_url), f"{cut.name} answering again after the cut")


def _answers(url: str) -> bool:
    try:
        engine = DockerEngine(url, timeout=5, connect_timeout=1.0)
    except EngineError:
        return False
    try:
        engine.ping()
        engine.check_host(1.0)
        return True
    except EngineError:
        return False
    finally:
        engine.close()
