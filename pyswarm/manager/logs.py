"""`service logs`: the interleaved output of a service's tasks that have containers, each line prefixed like
docker's (`web.1.<task id>@node-02    | `), read from the engines by one thread per task."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from pyswarm.drivers.engine import EngineError
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.settings import LOG_LINES_BUFFERED
from pyswarm.manager.state import ClusterState
from pyswarm.model import Node, Service, Task
from pyswarm.planners.containers import task_name


class ServiceLogs:
    def __init__(self, state: ClusterState, links: NodeLinks, connector: EngineConnector) -> None:
        self.state = state
        self.links = links
        self.connector = connector

    def stream(self, service: Service, tail: int | None, follow: bool) -> Iterator[bytes]:
        with self.state.lock:
            sources = [
                (t, self.links.get(t.node_id), self.state.nodes.get(t.node_id))
                for t in self.state.tasks_by_service.get(service.id, {}).values()
                if t.container_id and not t.state.terminal
            ]
        lines: queue.Queue[bytes | None] = queue.Queue(maxsize=LOG_LINES_BUFFERED)
        live = 0
        for task, link, node in sources:
            if link is not None and node is not None:
                live += 1
                threading.Thread(
                    target=self._pump, args=(service, task, link, node, tail, follow, lines), daemon=True
                ).start()
        while live:
            item = lines.get()
            if item is None:
                live -= 1
            else:
                yield item

    def _pump(
        self,
        service: Service,
        task: Task,
        link: NodeLink,
        node: Node,
        tail: int | None,
        follow: bool,
        lines: queue.Queue[bytes | None],
    ) -> None:
        prefix = f"{task_name(service, task)}.{task.id[:12]}@{node.hostname}    | ".encode()
        try:
            buffer = b""
            for chunk in self.connector.engine(link).logs(task.container_id, tail, follow):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    lines.put(prefix + line + b"\n")
            if buffer:
                lines.put(prefix + buffer + b"\n")
        except EngineError as exc:
            lines.put(prefix + f"error reading logs: {exc}\n".encode())
        finally:
            lines.put(None)
