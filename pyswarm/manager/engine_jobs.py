"""The engine jobs a pass hands out: starting tasks and removing containers, on each node's queue.

They run without the state lock: what a start did is queued as a StartOutcome, which the next pass applies
(transitions.apply_outcomes), all at once, so the workers never wait for the lock, nor make a busy pass wait
for them. A removal records its result under the lock when it is over.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace

from pyswarm.drivers.engine import EngineError, EngineUnreachable, ImageNotFound
from pyswarm.manager.executor import Executor
from pyswarm.manager.images import ImageDistributor
from pyswarm.manager.links import EngineConnector, NodeLink, NodeLinks
from pyswarm.manager.secret_delivery import DeliveryFailed, SecretDelivery
from pyswarm.manager.settings import DEFAULT_STOP_GRACE, SLOW_START, UNREACHABLE_RETRY_DELAY
from pyswarm.manager.state import ClusterState
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import StartOutcome, WorkList
from pyswarm.model import ContainerInfo, ContainerSpec, Service, ServiceSpec, Task, TaskState
from pyswarm.planners.containers import container_spec, container_template

log = logging.getLogger("pyswarm.manager")

Start = tuple[Task, Service]
Removal = tuple[str, str, str]  # node id, container id, task id
NOT_STARTED = "not started"
NODE_LEFT = "not started: the node left"


class EngineJobs:
    def __init__(
        self,
        state: ClusterState,
        work: WorkList,
        transitions: Transitions,
        links: NodeLinks,
        connector: EngineConnector,
        executor: Executor,
        per_node_parallelism: int,
        delivery: SecretDelivery,
    ) -> None:
        self.state = state
        self.work = work
        self.transitions = transitions
        self.links = links
        self.connector = connector
        self.executor = executor
        self.per_node_parallelism = per_node_parallelism
        # Per service: the spec and cluster ID its container template was made from, and the template. Workers
        # read and fill it without a lock (one dict operation each).
        self._templates: dict[str, tuple[ServiceSpec, str, ContainerSpec]] = {}
        self.images: ImageDistributor | None = None  # set by the wiring: gets a missing image onto its node
        self.delivery = delivery

    # --- handing out a pass's actions ---------------------------------------------------------------------

    def dispatch(self, starts: list[Start], removals: list[Removal], links: dict[str, NodeLink]) -> None:
        """One start job per node (it spreads over more workers if that node's engine is slow), one job per
        removal. What cannot be queued (the node's link is gone) is not in flight any more."""
        by_node: dict[str, list[Start]] = {}
        for item in starts:
            by_node.setdefault(item[0].node_id, []).append(item)
        for node_id, items in by_node.items():
            link = links.get(node_id)
            if link is None or not self.executor.submit(link, self.start_tasks, node_id, items):
                self.work.outcomes.extend(
                    StartOutcome(task, TaskState.ASSIGNED, NOT_STARTED, None, True) for task, _ in items
                )
                self.work.notify()
        for node_id, container_id, task_id in removals:
            link = links.get(node_id)
            if link is None or not self.executor.submit(link, self.remove_container, node_id, container_id, task_id):
                with self.state.lock:
                    self.work.removing.discard(container_id)

    def release(self, link: NodeLink) -> None:
        """A stopped link's queued jobs will not run: their tasks and containers are not in flight any more."""
        dropped = self.executor.take_queued(link)
        with self.state.lock:
            for fn, args in dropped:
                if fn == self.start_tasks:
                    self.work.outcomes.extend(
                        StartOutcome(task, TaskState.ASSIGNED, NOT_STARTED, None, True) for task, _ in args[1]
                    )
                elif fn == self.remove_container:
                    self.work.removing.discard(args[1])
        self.work.notify()

    # --- starts -------------------------------------------------------------------------------------------

    def start_tasks(self, node_id: str, items: list[Start]) -> None:
        """Start some of a node's tasks (marked PREPARING and in flight by the pass), one after another.

        A pass hands each node all its starts in one job. When an engine call turns out slow (a real engine
        over SSH: a start takes a fraction of a second), the rest is split among up to per_node_parallelism
        jobs; a fast engine is served by one thread, which costs far less CPU than many (they share one core)."""
        link = self.links.get(node_id)
        node = self.state.nodes.get(node_id)
        hostname = node.hostname if node else node_id
        push = self.work.outcomes.append  # deque.append: atomic, no lock needed
        gate = self.work.pass_gate
        queue = deque(items)
        while queue:
            task, service = queue.popleft()
            if link is None or link.stop.is_set():
                for later, _ in (task, service), *queue:
                    push(StartOutcome(later, TaskState.ASSIGNED, NODE_LEFT, None, True))
                break
            if not gate.is_set():  # no new engine call while a pass runs (is_set takes no lock)
                gate.wait()
            push(StartOutcome(task, TaskState.STARTING, "starting", None, False))
            began = time.monotonic()
            if not self._start_one(link, task, service, hostname, queue):
                break
            self.work.notify()
            if queue and time.monotonic() - began >= SLOW_START:
                queue = self._spread(link, node_id, queue)
        self.work.notify()

    def _start_one(self, link: NodeLink, task: Task, service: Service, hostname: str, queue: deque[Start]) -> bool:
        """One start, its outcome queued; False when the engine is unreachable (the rest waits for a retry)."""
        push = self.work.outcomes.append
        node = self.state.nodes.get(link.node_id)
        try:
            spec = container_spec(service, task, self.state.cluster_id, self.template(service), hostname)
            if node is not None and (service.spec.secrets or service.spec.configs):
                spec = replace(spec, files=self.delivery.prepare(node, task, service))
            info = self._run(link, task, service, spec, hostname)
        except (DeliveryFailed, ImageNotFound) as exc:
            self.delivery.remove(node, task.id)  # no container will use them
            push(StartOutcome(task, TaskState.REJECTED, str(exc), None, True))
        except EngineUnreachable as exc:
            # The node may be going down: back to assigned, the heartbeat decides, and we retry.
            self.connector.drop_engine(link)
            stalled = [task, *(later for later, _ in queue)]
            for later in stalled:
                push(StartOutcome(later, TaskState.ASSIGNED, f"engine unreachable: {exc}", None, False))
            self.work.notify()
            time.sleep(UNREACHABLE_RETRY_DELAY)
            for later in stalled:
                push(StartOutcome(later, None, "", None, True))
            return False
        except Exception as exc:  # EngineError, or a driver bug: the task fails, the worker lives on
            if not isinstance(exc, EngineError):
                log.exception("starting task %s on %s", task.id, hostname)
            self.delivery.remove(node, task.id)
            push(StartOutcome(task, TaskState.FAILED, str(exc) or type(exc).__name__, None, True))
        else:
            push(StartOutcome(task, TaskState.RUNNING, "started", info, True))
        return True

    def _run(self, link: NodeLink, task: Task, service: Service, spec: ContainerSpec, hostname: str) -> ContainerInfo:
        """Run the task's container. An image the node lacks is got first (a pull, else from a node that has it:
        images.py; the task shows PREPARING and how it goes meanwhile), then the run is tried once more.
        ImageNotFound when no registry and no node has it."""
        engine = self.connector.engine(link)
        try:
            return engine.run(spec)
        except ImageNotFound as exc:
            if self.images is None:
                raise ImageNotFound(f"{exc} (pull it on {hostname})") from None

        def progress(message: str) -> None:
            self.work.outcomes.append(StartOutcome(task, TaskState.PREPARING, message, None, False))
            self.work.notify()

        run_ref = self.images.ensure(link.node_id, spec.image, self.images.registry_auth(service), progress)
        self.work.outcomes.append(StartOutcome(task, TaskState.STARTING, "starting", None, False))
        return engine.run(spec if run_ref == spec.image else replace(spec, image=run_ref))

    def _spread(self, link: NodeLink, node_id: str, queue: deque[Start]) -> deque[Start]:
        """A slow engine: keep one part of the rest, hand the others to more jobs on the node's queue."""
        rest = list(queue)
        parts = min(self.per_node_parallelism, len(rest))
        for part in range(1, parts):
            chunk = rest[part::parts]
            if not self.executor.submit(link, self.start_tasks, node_id, chunk):
                for later, _ in chunk:
                    self.work.outcomes.append(StartOutcome(later, TaskState.ASSIGNED, NODE_LEFT, None, True))
        return deque(rest[0::parts])

    def template(self, service: Service) -> ContainerSpec:
        cached, cluster_id = self._templates.get(service.id), self.state.cluster_id
        # Specs are frozen: an update makes a new one.
        if cached is None or cached[0] is not service.spec or cached[1] != cluster_id:
            cached = (service.spec, cluster_id, container_template(service, cluster_id))
            self._templates[service.id] = cached
        return cached[2]

    def forget_service(self, service_id: str) -> None:
        """The service's last task is gone: no start of it can come after that."""
        self._templates.pop(service_id, None)

    # --- removals -------------------------------------------------------------------------------------------

    def stop_grace(self, task_id: str) -> int:
        """Seconds a task's container gets to stop before it is killed: its service's grace period."""
        task = self.state.tasks.get(task_id)
        service = self.state.services.get(task.service_id) if task is not None else None
        return int(service.spec.stop_grace_period) if service is not None else DEFAULT_STOP_GRACE

    def queue_removal(self, task: Task) -> None:
        """Remove a task's container: the task leaves the history (lock held). One that is gone already, or
        whose node is not linked, is left to the node's resync, which removes containers of unknown tasks."""
        link = self.links.get(task.node_id)
        if link is not None and task.container_id and task.container_id not in self.work.removing:
            self.work.removing.add(task.container_id)
            if not self.executor.submit(link, self.remove_container, task.node_id, task.container_id, task.id):
                self.work.removing.discard(task.container_id)  # the link is stopping: a resync removes it later

    def queue_stop(self, task: Task) -> None:
        """Stop a failed task's container and keep it, for its logs (lock held)."""
        link = self.links.get(task.node_id)
        if link is not None and task.container_id:
            self.executor.submit(link, self._stop_container, task.node_id, task.container_id, task.id)

    def _stop_container(self, node_id: str, container_id: str, task_id: str) -> None:
        link = self.links.get(node_id)
        if link is None:
            return
        try:
            self.connector.engine(link).stop(container_id, self.stop_grace(task_id))
        except EngineUnreachable:
            self.connector.drop_engine(link)
        except EngineError as exc:
            log.warning("stopping container %s on %s failed: %s", container_id[:12], node_id[:12], exc)

    def _has_files(self, task_id: str) -> bool:
        task = self.state.tasks.get(task_id)
        service = self.state.services.get(task.service_id) if task is not None else None
        return service is not None and bool(service.spec.secrets or service.spec.configs)

    def queue_container_removal(self, link: NodeLink, container_id: str, task_id: str) -> None:
        """Remove a container that no task of this node wants (lock held)."""
        if container_id not in self.work.removing:
            self.work.removing.add(container_id)
            self.executor.submit(link, self.remove_container, link.node_id, container_id, task_id)

    def remove_container(self, node_id: str, container_id: str, task_id: str) -> None:
        link = self.links.get(node_id)
        try:
            if link is None:
                return
            self.connector.engine(link).remove(container_id, stop_timeout=self.stop_grace(task_id))
        except EngineUnreachable:
            if link is not None:
                self.connector.drop_engine(link)
            return
        except EngineError as exc:
            log.warning("removing container %s on %s failed: %s", container_id[:12], node_id[:12], exc)
            return
        finally:
            with self.state.lock:
                self.work.removing.discard(container_id)
                if task_id in self.state.tasks:
                    self.work.attention.add(task_id)  # a failed removal is retried by a later pass
        self.delivery.remove(self.state.nodes.get(node_id), task_id, self._has_files(task_id))
        with self.state.lock:
            task = self.state.tasks.get(task_id)
            if task is not None and task.container_id == container_id and not task.state.terminal:
                self.transitions.container_gone(task)
        self.work.notify()
