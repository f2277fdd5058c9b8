"""Secrets and configs to a task's node: its files written in a tmpfs there before the container starts, bound
read-only into it (secrets under /run/secrets/, configs at their target), and removed with the container.

Each node's host is reached as the ingress mesh reaches it (SSH for ssh:// engines); a runner is kept per
node. The data is read from the state under its lock and written outside it, on the node's engine-job thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from pyswarm.drivers.host import HostError, HostRunner, host_for_url
from pyswarm.drivers.host.task_files import DEFAULT_BASE, remove_task_files, task_files, write_task_files
from pyswarm.manager.state import ClusterState
from pyswarm.model import FileMount, FileReference, Node, Service, Task
from pyswarm.model.secret import mount_path

log = logging.getLogger("pyswarm.manager")


class DeliveryFailed(Exception):
    """The task's files could not be written on its node: the task is rejected with this message."""


class SecretDelivery:
    def __init__(
        self,
        state: ClusterState,
        host_factory: Callable[[str], HostRunner] = host_for_url,
        base: str = DEFAULT_BASE,
        mount: bool = True,  # False: the base is a plain directory (tests that cannot mount)
    ) -> None:
        self.state = state
        self.host_factory = host_factory
        self.base = base
        self.mount = mount
        self._hosts: dict[str, HostRunner] = {}
        self._lock = threading.Lock()
        self._written: set[str] = set()  # task ids whose files are on their node

    def prepare(self, node: Node, task: Task, service: Service) -> tuple[FileMount, ...]:
        """Write the task's secret and config files on its node; the mounts that bind them into the container."""
        spec = service.spec
        if not spec.secrets and not spec.configs:
            return ()
        with self.state.lock:
            items = [(ref, self._data(ref, "secret")) for ref in spec.secrets]
            items += [(ref, self._data(ref, "config")) for ref in spec.configs]
        targets = [mount_path(ref, "secret") for ref in spec.secrets] + [
            mount_path(ref, "config") for ref in spec.configs
        ]
        try:
            paths = write_task_files(self._host(node), task.id, task_files(items), self.base, mount=self.mount)
        except (HostError, ValueError) as exc:
            self._drop_host(node.id)
            raise DeliveryFailed(f"cannot write the task's secrets and configs on {node.hostname}: {exc}") from None
        with self._lock:
            self._written.add(task.id)
        return tuple(FileMount(host_path=path, target=target) for path, target in zip(paths, targets, strict=True))

    def remove(self, node: Node | None, task_id: str, has_files: bool = False) -> None:
        """The task's container is gone: its files go too (a failure is logged; a node's reboot clears a tmpfs).
        has_files: its service gives it files (so they may have been written by an earlier manager)."""
        with self._lock:
            if task_id not in self._written and not has_files:
                return
            self._written.discard(task_id)
        if node is None or not task_id:
            return
        try:
            remove_task_files(self._host(node), task_id, self.base)
        except (HostError, ValueError) as exc:
            self._drop_host(node.id)
            log.warning("removing the files of task %s on %s failed: %s", task_id[:12], node.hostname, exc)

    def close(self) -> None:
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            with contextlib.suppress(Exception):
                host.close()

    def _data(self, ref: FileReference, kind: str) -> bytes:
        objects = self.state.secrets if kind == "secret" else self.state.configs
        found = objects.get(ref.id)
        if found is None:
            raise DeliveryFailed(f"{kind} {ref.name} ({ref.id[:12]}) no longer exists")
        return found.data

    def _host(self, node: Node) -> HostRunner:
        with self._lock:
            host = self._hosts.get(node.id)
            if host is None:
                host = self._hosts[node.id] = self.host_factory(node.engine_url)
            return host

    def _drop_host(self, node_id: str) -> None:
        """A failed runner is made again next time (its SSH connection may be what failed)."""
        with self._lock:
            host = self._hosts.pop(node_id, None)
        if host is not None:
            with contextlib.suppress(Exception):
                host.close()
