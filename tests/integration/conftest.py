"""Integration fixtures: a real multi-host lab of Docker Engines (see pyswarm.lab).

Fixture ``lab`` (session scope) yields a :class:`pyswarm.lab.Lab` that is up, with
``PYSWARM_TEST_NODES`` nodes (default 3): ``lab.nodes`` lists them (``.name`` "node-01",
``.addr`` "192.168.39.1", ``.socket`` / ``.docker_host`` for the engine's unix socket,
``.engine_url`` "ssh://root@192.168.39.1"). Each node's engine has the image ``nginx:latest``
(``/usr/local/bin/udp-echo PORT`` is in it too) and is reachable over SSH by docker-py
(``docker.DockerClient(base_url=node.engine_url, use_ssh_client=False)``) and by ``ssh``.

Useful calls: ``lab.exec(node, argv, env=None, check=True, capture=True)`` runs argv in the
node (DOCKER_HOST set to its engine), ``lab.spawn(node, argv, **popen_kwargs)`` starts a
long-running process there (killed by ``lab.down()``), ``lab.kill/start/cut/heal(node)`` inject
faults, and ``lab.restore()`` undoes them all: call it in a ``finally`` after fault injection,
since the lab is shared by the whole session.

It skips when not root or without dockerd, replaces any lab already running in
``$PYSWARM_LAB_DIR`` (default /var/lib/pyswarm-lab), and is always torn down at the end, even
when tests fail or a test already took it down. Every test under tests/integration gets the
``lab`` marker automatically (deselect them with ``-m "not lab"``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyswarm.lab import Lab, LabConfig
from tests.integration.swarm import Swarm, wait_until


def lab_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, bridge, dockerds)"
    if shutil.which("dockerd") is None and not os.access("/usr/sbin/dockerd", os.X_OK):
        return "dockerd is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A running lab of PYSWARM_TEST_NODES (default 3) real Docker Engine hosts."""
    reason = lab_skip_reason()
    if reason:
        pytest.skip(reason)
    nodes = int(os.environ.get("PYSWARM_TEST_NODES", "3"))
    the_lab = Lab(LabConfig(nodes=nodes))
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="module")
def swarm(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    """A pyswarm cluster on the lab: the manager on node-01, every other node joined as a worker.
    Each test module gets a fresh one; it leaves the swarm (services and containers removed) at the end."""
    cluster = Swarm(lab, tmp_path_factory.mktemp("client") / "config.json")
    cluster.leave_all()  # whatever an earlier, interrupted run left
    try:
        cluster.init()
        for node in lab.nodes[1:]:
            cluster.join(node.name)
        wait_until(lambda: set(cluster.node_status().values()) == {"ready"}, what="all nodes ready")
        yield cluster
    finally:
        lab.restore()
        cluster.leave_all()
