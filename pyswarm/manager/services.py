"""Service commands: create, update, remove. Each is durable before it returns; the next pass acts on it."""

from __future__ import annotations

import functools
import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlparse

from pyswarm.manager.errors import Conflict, Invalid
from pyswarm.manager.ids import new_id
from pyswarm.manager.settings import EPHEMERAL_PORTS, RESERVED_PORTS
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import StateStore
from pyswarm.manager.worklist import WorkList
from pyswarm.model import PublishMode, Service, ServiceMode, ServiceSpec, TaskState
from pyswarm.model.parse import SpecError, check_port_conflicts
from pyswarm.model.secret import mount_path


def _targets_checked(spec: ServiceSpec) -> ServiceSpec:
    """No two of the spec's mounts, secrets and configs at one path in the container: the engine would refuse
    every task ("Duplicate mount point") and the service would restart forever."""
    seen: dict[str, str] = {}
    paths = [(m.target, f"mount {m.target}") for m in spec.mounts]
    paths += [(mount_path(r, "secret"), f"secret {r.name}") for r in spec.secrets]
    paths += [(mount_path(r, "config"), f"config {r.name}") for r in spec.configs]
    for path, what in paths:
        path = posixpath.normpath(path)
        if path in seen:
            raise Invalid(f"{seen[path]} and {what} have a conflicting target: {path!r}")
        seen[path] = what
    return spec


@functools.lru_cache(maxsize=16384)  # every create checks every node's URL: at thousands of nodes, parse once
def engine_port(url: str) -> int | None:
    """The TCP port the manager reaches an engine URL's host on: ssh:// (default 22), or tcp://."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        return None
    if parsed.scheme == "ssh":
        return port or 22
    return port if parsed.scheme == "tcp" else None


class ServiceCommands:
    def __init__(
        self,
        state: ClusterState,
        work: WorkList,
        store: StateStore,
        listen_port: int,
        bind_files: Callable[[ServiceSpec], ServiceSpec] = lambda spec: spec,
        resolve_image: Callable[[str, dict[str, str] | None], tuple[str, str | None]] = lambda image, auth: (
            image,
            None,
        ),
    ) -> None:
        self.state = state
        self.work = work
        self.store = store
        self.listen_port = listen_port
        # Checks a spec's secret and config references and fills in their objects' ids (lock held).
        self.bind_files = bind_files
        # An image reference pinned to its digest, or kept with a warning (engine I/O: no lock held).
        self.resolve_image = resolve_image
        self._node_ports_cache: tuple[tuple[int, int] | None, dict[int, str]] = (None, {})

    def pinned(
        self, spec: ServiceSpec, ref: str | None = None, auth: dict[str, str] | None = None
    ) -> tuple[ServiceSpec, list[str]]:
        """The spec with its image pinned to a digest, as swarm does on create and on an update that changes
        the image (ref: the service updated); the warnings to show the user. Not under the lock: it asks
        engines."""
        if ref is not None:
            with self.state.lock:
                if self.state.find_service(ref).spec.image == spec.image:
                    return spec, []
        image, warning = self.resolve_image(spec.image, auth)
        return replace(spec, image=image), [warning] if warning else []

    def create(self, spec: ServiceSpec, registry_auth: dict[str, str] | None = None) -> Service:
        """registry_auth: --with-registry-auth's credentials, kept sealed for the nodes' pulls."""
        with self.state.lock:
            self._check(spec, None)
            service_id = new_id()
            sealed = self._sealed(registry_auth, service_id)
            service = Service(id=service_id, spec=_targets_checked(self.bind_files(spec)), registry_auth=sealed)
            self.store.write(services=[service])  # durable before we answer
            self.state.services[service.id] = service
            self.state.tasks_by_service[service.id] = {}
            self.work.dirty_services.add(service.id)
        self.work.notify()
        return service

    def update(self, ref: str, spec: ServiceSpec, version: int, registry_auth: dict[str, str] | None = None) -> Service:
        """registry_auth replaces the credentials kept for the service; None keeps them, as docker does."""
        with self.state.lock:
            current = self.state.find_service(ref)
            if version != current.version:
                raise Conflict(
                    f"update out of sequence: service {current.spec.name} is at version {current.version}, "
                    f"the update was made against version {version}; read it again and retry"
                )
            if spec.name != current.spec.name:
                raise Invalid("a service cannot be renamed")
            if spec.mode is not current.spec.mode:
                raise Invalid("a service's mode cannot be changed")
            self._check(spec, current.id)
            sealed = self._sealed(registry_auth, current.id) if registry_auth else current.registry_auth
            updated = replace(
                current,
                spec=_targets_checked(self.bind_files(spec)),
                version=current.version + 1,
                updated_at=time.time(),
                registry_auth=sealed,
            )
            self.store.write(services=[updated])
            self.state.services[current.id] = updated
            self.work.dirty_services.add(current.id)
            self.work.updating.add(current.id)  # until a pass finds no task of another spec
            self.work.schedule_again = True  # e.g. constraints or max-per-node relaxed
        self.work.notify()
        return updated

    def remove(self, ref: str) -> Service:
        with self.state.lock:
            service = self.state.find_service(ref)
            tasks = list(self.state.tasks_by_service.get(service.id, {}).values())
            for task in tasks:
                task.desired_state = TaskState.SHUTDOWN
                task.message = "service removed"
            # Durable now: the service is gone. Its tasks are written by the next pass (only passes write
            # tasks, in order); after a crash before that, tasks of a missing service are shut down anyway.
            self.store.write(delete_services=[service.id])
            self.work.dirty_tasks.update(t.id for t in tasks)
            del self.state.services[service.id]
            self.work.attention.update(t.id for t in tasks)
            self.work.dirty_services.add(service.id)  # the pass tells watchers and the mesh
            self.work.schedule_again = True
        self.work.notify()
        return service

    def registry_auth(self, service: Service) -> dict[str, str] | None:
        """The credentials kept for the service's pulls, or None."""
        if not service.registry_auth:
            return None
        return dict(json.loads(self.store.unseal(service.registry_auth, service.id)))

    def _sealed(self, registry_auth: dict[str, str] | None, service_id: str) -> str:
        return self.store.seal(json.dumps(registry_auth).encode(), service_id) if registry_auth else ""

    def _check(self, spec: ServiceSpec, service_id: str | None) -> None:
        try:
            check_port_conflicts(spec.ports)
        except SpecError as exc:
            raise Invalid(str(exc)) from None
        if spec.mode.is_global and spec.replicas not in (0, 1):
            raise Invalid("replicas can only be used with replicated or replicated-job mode")
        if spec.max_concurrent and spec.mode is not ServiceMode.REPLICATED_JOB:
            raise Invalid("max-concurrent can only be used with replicated-job mode")
        if spec.max_replicas_per_node and spec.mode.is_global:
            raise Invalid("replicas-max-per-node can only be used with replicated or replicated-job mode")
        reserved = self._reserved_ports({p.published for p in spec.ports}) if spec.ports else {}
        for port in spec.ports:
            if port.published in reserved:
                raise Invalid(
                    f"published port {port.published} is reserved: {reserved[port.published]}; choose another port"
                )
            if port.mode is PublishMode.INGRESS and port.published in EPHEMERAL_PORTS:
                raise Invalid(
                    f"published port {port.published} is in the engines' ephemeral range 32768-60999, where tasks' "
                    "host ports live; choose a port below 32768"
                )
        for other in self.state.services.values():
            if other.id != service_id:
                self._check_against(spec, other)

    def _reserved_ports(self, published: set[int]) -> dict[int, str]:
        """Of these ports, those no service may publish, and why (lock held): the fixed ones, the manager's
        listen port, and each node's engine port (a node's SSH port may be other than 22; a tcp:// engine's
        its own)."""
        reserved = dict(RESERVED_PORTS)
        node_ports = self._node_ports()
        for port in published & node_ports.keys():
            reserved.setdefault(port, node_ports[port])
        reserved[self.listen_port] = "the manager's API listens on it"
        return reserved

    def _node_ports(self) -> dict[int, str]:
        """Each node's engine port and why it is reserved, made again only after a node changed: a create
        must not walk thousands of nodes (lock held)."""
        key = (self.state.nodes_version, len(self.state.nodes))
        if self._node_ports_cache[0] != key:
            ports: dict[int, str] = {}
            for node in self.state.nodes.values():
                port = engine_port(node.engine_url)
                if port is not None:
                    ports.setdefault(port, f"node {node.hostname}'s engine is reached through it ({node.engine_url})")
            self._node_ports_cache = (key, ports)
        return self._node_ports_cache[1]

    @staticmethod
    def _check_against(spec: ServiceSpec, other: Service) -> None:
        if other.spec.name == spec.name:
            raise Conflict(f"service name {spec.name!r} is already in use by service {other.id[:12]}")
        for mine in spec.ports:
            for theirs in other.spec.ports:
                if mine.published != theirs.published or mine.protocol is not theirs.protocol:
                    continue
                if mine.mode is PublishMode.HOST and theirs.mode is PublishMode.HOST:
                    continue  # host-mode ports only clash per node; the scheduler keeps them apart
                raise Conflict(
                    f"port '{mine.published}/{mine.protocol.value}' is already in use by service "
                    f"'{other.spec.name}' ({other.id[:12]})"
                )
