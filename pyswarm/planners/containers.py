"""What container a task runs as, and which endpoints the mesh forwards to. Pure: data in, data out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pyswarm.model import (
    LABEL_CLUSTER_ID,
    LABEL_NODE_ID,
    LABEL_SERVICE_ID,
    LABEL_SERVICE_NAME,
    LABEL_SLOT,
    LABEL_TASK_ID,
    ContainerOptions,
    ContainerSpec,
    Endpoint,
    Node,
    PortBinding,
    PublishMode,
    Service,
    Task,
    TaskState,
)
from pyswarm.model.parse_container import expand_hostname


def task_name(service: Service, task: Task) -> str:
    """`web.1` for replicated tasks; global tasks are named after their node, as in swarm."""
    return f"{service.spec.name}.{task.slot if task.slot else task.node_id}"


def container_template(service: Service, cluster_id: str) -> ContainerSpec:
    """What every task of the service runs with: container_spec fills in the task's own name and labels."""
    spec = service.spec
    labels = dict(spec.labels)
    labels.update({LABEL_CLUSTER_ID: cluster_id, LABEL_SERVICE_ID: service.id, LABEL_SERVICE_NAME: spec.name})
    # Ingress ports go on an ephemeral host port that the mesh forwards to; host-mode ports bind as given.
    ports = tuple(
        PortBinding(target=p.target, protocol=p.protocol, host_port=p.published if p.mode is PublishMode.HOST else 0)
        for p in spec.ports
    )
    return ContainerSpec(
        name=spec.name,
        image=spec.image,
        command=spec.command,
        env=spec.env,
        labels=labels,
        ports=ports,
        stop_timeout=max(0, int(spec.stop_grace_period)),
        options=ContainerOptions(
            entrypoint=spec.entrypoint,
            workdir=spec.workdir,
            user=spec.user,
            init=spec.init,
            read_only=spec.read_only,
            cap_add=spec.cap_add,
            cap_drop=spec.cap_drop,
            sysctls=spec.sysctls,
            ulimits=spec.ulimits,
            dns=spec.dns,
            dns_search=spec.dns_search,
            dns_options=spec.dns_options,
            log_driver=spec.log_driver,
            log_opts=spec.log_opts,
            stop_signal=spec.stop_signal,
            mounts=spec.mounts,
            resources=spec.resources,
            healthcheck=spec.healthcheck,
        ),
    )


def container_spec(
    service: Service, task: Task, cluster_id: str, template: ContainerSpec | None = None, node_hostname: str = ""
) -> ContainerSpec:
    """The task's container. `template` is container_template(service, cluster_id), when the caller keeps
    it: a service's tasks share all of it but the name, three labels and the hostname."""
    if template is None:
        template = container_template(service, cluster_id)
    labels = template.labels.copy()
    labels[LABEL_TASK_ID] = task.id
    labels[LABEL_SLOT] = str(task.slot)
    labels[LABEL_NODE_ID] = task.node_id
    name = task_name(service, task)
    hostname = ""
    if service.spec.hostname:
        values = {
            "Service.Name": service.spec.name,
            "Service.ID": service.id,
            "Task.Slot": str(task.slot),
            "Task.ID": task.id,
            "Task.Name": f"{name}.{task.id}",
            "Node.Hostname": node_hostname,
            "Node.ID": task.node_id,
        }
        hostname = expand_hostname(service.spec.hostname, values)
    return ContainerSpec(
        f"{name}.{task.id}",
        template.image,
        template.command,
        template.env,
        labels,
        template.ports,
        template.stop_timeout,
        template.options,
        hostname,
    )


def endpoints(
    service: Service, tasks: Iterable[Task], nodes: Mapping[str, Node]
) -> dict[tuple[int, str], tuple[Endpoint, ...]]:
    """(published port, protocol) -> running endpoints. Only running tasks wanted running, on Ready nodes."""
    result: dict[tuple[int, str], list[Endpoint]] = {
        (p.published, p.protocol.value): [] for p in service.spec.ingress_ports()
    }
    if not result:
        return {}
    for task in tasks:
        node = nodes.get(task.node_id)
        if (
            task.state is not TaskState.RUNNING
            or task.desired_state is not TaskState.RUNNING
            or node is None
            or not node.ready
        ):
            continue
        for port in service.spec.ingress_ports():
            host_port = task.host_ports.get(f"{port.target}/{port.protocol.value}")
            if host_port:
                result[(port.published, port.protocol.value)].append(
                    Endpoint(
                        node_addr=node.addr,
                        host_port=host_port,
                        task_id=task.id,
                        container_addr=task.container_addr,
                        target_port=port.target,
                    )
                )
    return {key: tuple(sorted(value, key=lambda e: e.task_id)) for key, value in result.items()}
