"""A task's secrets and configs written on its node for bind mounts, read from the state, removed with the
container; a node that cannot take them rejects the task with the reason. LocalHost in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyswarm.drivers.host import LocalHost
from pyswarm.manager.secret_delivery import DeliveryFailed, SecretDelivery
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store.base import Snapshot
from pyswarm.model import FileReference, Node, Service, ServiceSpec, Task
from pyswarm.model.secret import Config, Secret

NODE = Node(id="n1", hostname="node-01", engine_url="unix:///var/run/docker.sock", addr="10.0.0.1")


def delivery(tmp_path: Path) -> tuple[SecretDelivery, ClusterState]:
    state = ClusterState(Snapshot())
    state.secrets["s1"] = Secret(id="s1", name="dbpw", data=b"hunter2", labels={}, created_at=0.0, updated_at=0.0)
    state.configs["c1"] = Config(id="c1", name="site", data=b"conf", labels={}, created_at=0.0, updated_at=0.0)
    return SecretDelivery(state, lambda url: LocalHost(sudo=False), str(tmp_path / "base"), mount=False), state


def service(*secrets: FileReference, configs: tuple[FileReference, ...] = ()) -> Service:
    return Service(id="svc", spec=ServiceSpec(name="app", image="busybox", secrets=secrets, configs=configs))


def test_files_are_written_bound_at_their_targets_and_removed(tmp_path: Path) -> None:
    files, _ = delivery(tmp_path)
    task = Task(id="task1", service_id="svc", slot=1, node_id="n1")
    refs = (
        FileReference("dbpw", "dbpw", id="s1", uid=str(os.getuid()), gid=str(os.getgid()), mode=0o400),
        FileReference("dbpw", "/etc/pw", id="s1", uid=str(os.getuid()), gid=str(os.getgid())),
    )
    conf = (FileReference("site", "/etc/site.conf", id="c1", uid=str(os.getuid()), gid=str(os.getgid())),)
    mounts = files.prepare(NODE, task, service(*refs, configs=conf))
    assert [m.target for m in mounts] == ["/run/secrets/dbpw", "/etc/pw", "/etc/site.conf"]
    assert [Path(m.host_path).read_bytes() for m in mounts] == [b"hunter2", b"hunter2", b"conf"]
    assert oct(Path(mounts[0].host_path).stat().st_mode & 0o777) == oct(0o400)
    files.remove(NODE, task.id)
    assert not Path(mounts[0].host_path).parent.exists()


def test_a_service_without_secrets_writes_nothing(tmp_path: Path) -> None:
    files, _ = delivery(tmp_path)
    assert files.prepare(NODE, Task(id="t", service_id="svc", slot=1), service()) == ()
    assert not (tmp_path / "base").exists()


def test_a_node_without_a_shell_rejects_the_task_with_the_reason(tmp_path: Path) -> None:
    _, state = delivery(tmp_path)

    def no_shell(url: str) -> LocalHost:
        raise ValueError(f"engine {url} is reached over tcp://, which gives no way to run host commands")

    files = SecretDelivery(state, no_shell, str(tmp_path / "base"), mount=False)
    tcp = Node(id="n2", hostname="node-02", engine_url="tcp://10.0.0.2:2376", addr="10.0.0.2")
    with pytest.raises(DeliveryFailed, match="cannot write the task's secrets and configs on node-02: engine tcp"):
        files.prepare(tcp, Task(id="t", service_id="svc", slot=1), service(FileReference("dbpw", "dbpw", id="s1")))


def test_a_secret_removed_meanwhile_is_named(tmp_path: Path) -> None:
    files, state = delivery(tmp_path)
    del state.secrets["s1"]
    with pytest.raises(DeliveryFailed, match="secret dbpw"):
        files.prepare(NODE, Task(id="t", service_id="svc", slot=1), service(FileReference("dbpw", "dbpw", id="s1")))
