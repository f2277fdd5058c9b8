"""Model values to and from plain JSON-able dicts (for the store and the API). Pure.

A service's constraints differ between the two: the store keeps each as its key, operator and value, so
that nothing is split again when it is read back; the API shows each as its text (`node.role==worker`),
which is what the CLI and the API take. Reading takes both forms, and the text form of the state files of
earlier releases.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from pyswarm.model import (
    Availability,
    Constraint,
    ConstraintOp,
    FileReference,
    HealthCheck,
    Mount,
    MountType,
    Node,
    NodeRole,
    NodeStatus,
    PortConfig,
    Protocol,
    PublishMode,
    Resources,
    RestartCondition,
    RestartPolicy,
    Service,
    ServiceMode,
    ServiceSpec,
    Task,
    TaskState,
    Ulimit,
)


def spec_to_dict(spec: ServiceSpec, *, stored: bool = False) -> dict[str, Any]:
    """The spec as the API shows it; stored: as the store keeps it (constraints as key, operator, value)."""
    return {
        "name": spec.name,
        "image": spec.image,
        "mode": spec.mode.value,
        "replicas": spec.replicas,
        "command": list(spec.command),
        "env": list(spec.env),
        "labels": dict(spec.labels),
        "ports": [
            {"published": p.published, "target": p.target, "protocol": p.protocol.value, "mode": p.mode.value}
            for p in spec.ports
        ],
        "constraints": [constraint_to_dict(c) for c in spec.constraints]
        if stored
        else [str(c) for c in spec.constraints],
        "placement_prefs": list(spec.placement_prefs),
        "max_replicas_per_node": spec.max_replicas_per_node,
        "restart_policy": {
            "condition": spec.restart_policy.condition.value,
            "delay": spec.restart_policy.delay,
            "max_attempts": spec.restart_policy.max_attempts,
            "window": spec.restart_policy.window,
        },
        "stop_grace_period": spec.stop_grace_period,
        "force_update": spec.force_update,
        **container_settings_to_dict(spec),
    }


def container_settings_to_dict(spec: ServiceSpec) -> dict[str, Any]:
    """The spec's job and container settings, as the API and the store both show them."""
    health = spec.healthcheck
    return {
        "max_concurrent": spec.max_concurrent,
        "entrypoint": None if spec.entrypoint is None else list(spec.entrypoint),
        "workdir": spec.workdir,
        "user": spec.user,
        "hostname": spec.hostname,
        "init": spec.init,
        "read_only": spec.read_only,
        "cap_add": list(spec.cap_add),
        "cap_drop": list(spec.cap_drop),
        "sysctls": dict(spec.sysctls),
        "ulimits": [{"name": u.name, "soft": u.soft, "hard": u.hard} for u in spec.ulimits],
        "dns": list(spec.dns),
        "dns_search": list(spec.dns_search),
        "dns_options": list(spec.dns_options),
        "log_driver": spec.log_driver,
        "log_opts": dict(spec.log_opts),
        "stop_signal": spec.stop_signal,
        "mounts": [mount_to_dict(m) for m in spec.mounts],
        "resources": resources_to_dict(spec.resources),
        "healthcheck": None
        if health is None
        else {
            "test": list(health.test),
            "interval": health.interval,
            "timeout": health.timeout,
            "retries": health.retries,
            "start_period": health.start_period,
        },
        "secrets": [file_reference_to_dict(r) for r in spec.secrets],
        "configs": [file_reference_to_dict(r) for r in spec.configs],
    }


def resources_to_dict(res: Resources) -> dict[str, int]:
    return {f.name: int(getattr(res, f.name)) for f in fields(Resources)}


def mount_to_dict(m: Mount) -> dict[str, Any]:
    return {
        "type": m.type.value,
        "source": m.source,
        "target": m.target,
        "readonly": m.readonly,
        "volume_driver": m.volume_driver,
        "volume_labels": dict(m.volume_labels),
        "volume_nocopy": m.volume_nocopy,
        "bind_propagation": m.bind_propagation,
        "tmpfs_size": m.tmpfs_size,
        "tmpfs_mode": m.tmpfs_mode,
    }


def mount_from_dict(data: dict[str, Any]) -> Mount:
    return Mount(
        type=MountType(data.get("type", "volume")),
        target=str(data["target"]),
        source=str(data.get("source", "")),
        readonly=bool(data.get("readonly", False)),
        volume_driver=str(data.get("volume_driver", "")),
        volume_labels=dict(data.get("volume_labels") or {}),
        volume_nocopy=bool(data.get("volume_nocopy", False)),
        bind_propagation=str(data.get("bind_propagation", "")),
        tmpfs_size=int(data.get("tmpfs_size", 0)),
        tmpfs_mode=int(data.get("tmpfs_mode", 0)),
    )


def file_reference_to_dict(ref: FileReference) -> dict[str, Any]:
    return {"name": ref.name, "target": ref.target, "id": ref.id, "uid": ref.uid, "gid": ref.gid, "mode": ref.mode}


def file_reference_from_dict(data: dict[str, Any]) -> FileReference:
    return FileReference(
        name=str(data["name"]),
        target=str(data["target"]),
        id=str(data.get("id", "")),
        uid=str(data.get("uid", "0")),
        gid=str(data.get("gid", "0")),
        mode=int(data.get("mode", 0o444)),
    )


def container_settings_from_dict(data: dict[str, Any]) -> dict[str, Any]:
    """ServiceSpec's keyword arguments for the job and container settings in `data` (absent: defaults)."""
    res = data.get("resources") or {}
    health = data.get("healthcheck")
    entrypoint = data.get("entrypoint")
    return {
        "max_concurrent": int(data.get("max_concurrent", 0)),
        "entrypoint": None if entrypoint is None else tuple(entrypoint),
        "workdir": str(data.get("workdir", "")),
        "user": str(data.get("user", "")),
        "hostname": str(data.get("hostname", "")),
        "init": data.get("init"),
        "read_only": bool(data.get("read_only", False)),
        "cap_add": tuple(data.get("cap_add") or ()),
        "cap_drop": tuple(data.get("cap_drop") or ()),
        "sysctls": dict(data.get("sysctls") or {}),
        "ulimits": tuple(
            Ulimit(str(u["name"]), int(u["soft"]), int(u.get("hard", u["soft"]))) for u in data.get("ulimits") or ()
        ),
        "dns": tuple(data.get("dns") or ()),
        "dns_search": tuple(data.get("dns_search") or ()),
        "dns_options": tuple(data.get("dns_options") or ()),
        "log_driver": str(data.get("log_driver", "")),
        "log_opts": dict(data.get("log_opts") or {}),
        "stop_signal": str(data.get("stop_signal", "")),
        "mounts": tuple(mount_from_dict(m) for m in data.get("mounts") or ()),
        "resources": Resources(**{f.name: int(res.get(f.name, 0)) for f in fields(Resources)}),
        "healthcheck": None
        if health is None
        else HealthCheck(
            test=tuple(health.get("test") or ()),
            interval=float(health.get("interval", 0.0)),
            timeout=float(health.get("timeout", 0.0)),
            retries=int(health.get("retries", 0)),
            start_period=float(health.get("start_period", 0.0)),
        ),
        "secrets": tuple(file_reference_from_dict(r) for r in data.get("secrets") or ()),
        "configs": tuple(file_reference_from_dict(r) for r in data.get("configs") or ()),
    }


def spec_from_dict(data: dict[str, Any]) -> ServiceSpec:
    restart = data.get("restart_policy") or {}
    return ServiceSpec(
        name=data["name"],
        image=data["image"],
        mode=ServiceMode(data.get("mode", "replicated")),
        replicas=int(data.get("replicas", 1)),
        command=tuple(data.get("command") or ()),
        env=tuple(data.get("env") or ()),
        labels=dict(data.get("labels") or {}),
        ports=tuple(
            PortConfig(
                published=int(p["published"]),
                target=int(p["target"]),
                protocol=Protocol(p.get("protocol", "tcp")),
                mode=PublishMode(p.get("mode", "ingress")),
            )
            for p in data.get("ports") or ()
        ),
        constraints=tuple(constraint_from_stored(item) for item in data.get("constraints") or ()),
        placement_prefs=tuple(data.get("placement_prefs") or ()),
        max_replicas_per_node=int(data.get("max_replicas_per_node", 0)),
        restart_policy=RestartPolicy(
            condition=RestartCondition(restart.get("condition", "any")),
            delay=float(restart.get("delay", 5.0)),
            max_attempts=int(restart.get("max_attempts", 0)),
            window=float(restart.get("window", 0.0)),
        ),
        stop_grace_period=float(data.get("stop_grace_period", 10.0)),
        force_update=int(data.get("force_update", 0)),
        **container_settings_from_dict(data),
    )


def constraint_to_dict(constraint: Constraint) -> dict[str, str]:
    return {"key": constraint.key, "op": constraint.op.value, "value": constraint.value}


def constraint_from_stored(item: dict[str, Any] | str) -> Constraint:
    """A constraint as the store keeps it, or as its text (the API's form, and the store's before it kept
    the three fields)."""
    if isinstance(item, str):
        return constraint_from_text(item)
    return Constraint(key=str(item["key"]), op=ConstraintOp(item["op"]), value=str(item["value"]))


def constraint_from_text(text: str) -> Constraint:
    """`KEY==VALUE` or `KEY!=VALUE`, split at the first operator, as the parser reads it: a key holds no `=`
    or `!`. (Splitting at a `!=` wherever it was turned `node.hostname==a!=b` into another rule.)"""
    found = [(text.find(op.value), op) for op in ConstraintOp if op.value in text]
    if not found:
        raise ValueError(f"constraint {text[:80]!r} has no operator (== or !=)")
    index, op = min(found, key=lambda item: item[0])
    return Constraint(key=text[:index], op=op, value=text[index + len(op.value) :])


def service_to_dict(service: Service) -> dict[str, Any]:
    """The service as the store keeps it."""
    return {
        "id": service.id,
        "version": service.version,
        "created_at": service.created_at,
        "updated_at": service.updated_at,
        "spec": spec_to_dict(service.spec, stored=True),
        "registry_auth": service.registry_auth,
    }


def service_from_dict(data: dict[str, Any]) -> Service:
    return Service(
        id=data["id"],
        spec=spec_from_dict(data["spec"]),
        version=int(data["version"]),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        registry_auth=str(data.get("registry_auth", "")),
    )


def node_to_dict(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "hostname": node.hostname,
        "engine_url": node.engine_url,
        "addr": node.addr,
        "role": node.role.value,
        "availability": node.availability.value,
        "status": node.status.value,
        "labels": dict(node.labels),
        "engine_id": node.engine_id,
        "engine_version": node.engine_version,
        "nano_cpus": node.nano_cpus,
        "memory_bytes": node.memory_bytes,
        "leader": node.leader,
        "status_message": node.status_message,
        "ingress_synced": node.ingress_synced,
        "ingress_error": node.ingress_error,
        "created_at": node.created_at,
        "updated_at": node.updated_at,
    }


def node_from_dict(data: dict[str, Any]) -> Node:
    return Node(
        id=data["id"],
        hostname=data["hostname"],
        engine_url=data["engine_url"],
        addr=data["addr"],
        role=NodeRole(data["role"]),
        availability=Availability(data["availability"]),
        status=NodeStatus(data["status"]),
        labels=dict(data.get("labels") or {}),
        engine_id=data.get("engine_id", ""),
        engine_version=data.get("engine_version", ""),
        nano_cpus=int(data.get("nano_cpus", 0)),
        memory_bytes=int(data.get("memory_bytes", 0)),
        leader=bool(data.get("leader", False)),
        status_message=data.get("status_message", ""),
        ingress_synced=data.get("ingress_synced"),
        ingress_error=data.get("ingress_error", ""),
        created_at=float(data.get("created_at", 0.0)),
        updated_at=float(data.get("updated_at", 0.0)),
    )


def task_to_dict(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "service_id": task.service_id,
        "slot": task.slot,
        "node_id": task.node_id,
        "desired_state": task.desired_state.value,
        "state": task.state.value,
        "message": task.message,
        "error": task.error,
        "container_id": task.container_id,
        "host_ports": dict(task.host_ports),
        "spec_version": task.spec_version,
        "spec_digest": task.spec_digest,
        "container_addr": task.container_addr,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "state_changed_at": task.state_changed_at,
    }


def task_from_dict(data: dict[str, Any]) -> Task:
    return Task(
        id=data["id"],
        service_id=data["service_id"],
        slot=int(data["slot"]),
        node_id=data.get("node_id", ""),
        desired_state=TaskState(data["desired_state"]),
        state=TaskState(data["state"]),
        message=data.get("message", ""),
        error=data.get("error", ""),
        container_id=data.get("container_id", ""),
        host_ports={k: int(v) for k, v in (data.get("host_ports") or {}).items()},
        spec_version=int(data.get("spec_version", 1)),
        spec_digest=data.get("spec_digest", ""),
        container_addr=data.get("container_addr", ""),
        created_at=float(data.get("created_at", 0.0)),
        updated_at=float(data.get("updated_at", 0.0)),
        state_changed_at=float(data.get("state_changed_at", 0.0)),
    )
