"""The container a task runs as: names, labels, ports, and the per-service template the manager keeps."""

from __future__ import annotations

from pyswarm.model import (
    LABEL_CLUSTER_ID,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_SLOT,
    LABEL_TASK_ID,
    PortBinding,
    PortConfig,
    Protocol,
    PublishMode,
    Service,
    ServiceSpec,
    Task,
)
from pyswarm.planners.containers import container_spec, container_template


def _service() -> Service:
    spec = ServiceSpec(
        name="web",
        image="nginx",
        replicas=2,
        labels={"team": "ops", LABEL_TASK_ID: "user-set"},
        ports=(
            PortConfig(published=80, target=80),
            PortConfig(published=5353, target=53, protocol=Protocol.UDP, mode=PublishMode.HOST),
        ),
        stop_grace_period=3.5,
    )
    return Service(id="svc1", spec=spec)


def test_a_task_container_names_and_labels_its_task() -> None:
    service = _service()
    task = Task(id="t1", service_id="svc1", slot=2, node_id="n1")
    spec = container_spec(service, task, "cluster1")
    assert spec.name == "web.2.t1"
    assert spec.labels == {
        "team": "ops",
        LABEL_CLUSTER_ID: "cluster1",
        LABEL_SERVICE_ID: "svc1",
        LABEL_SERVICE_NAME: "web",
        LABEL_TASK_ID: "t1",  # ours wins over a user label of the same key
        LABEL_SLOT: "2",
        LABEL_NODE_ID: "n1",
    }
    # Ingress ports take an ephemeral host port (0: the engine picks); host-mode ports bind as published.
    assert spec.ports == (PortBinding(80, Protocol.TCP, 0), PortBinding(53, Protocol.UDP, 5353))
    assert spec.stop_timeout == 3


def test_the_template_gives_the_same_containers_and_is_not_changed_by_them() -> None:
    service = _service()
    template = container_template(service, "cluster1")
    kept = dict(template.labels)
    tasks = [Task(id=f"t{i}", service_id="svc1", slot=i, node_id=f"n{i}") for i in (1, 2)]
    for task in tasks:
        assert container_spec(service, task, "cluster1", template) == container_spec(service, task, "cluster1")
    assert template.labels == kept  # each container got its own copy of the labels
    global_task = Task(id="g1", service_id="svc1", slot=0, node_id="n7")
    assert container_spec(service, global_task, "cluster1", template).name == "web.n7.g1"
