"""The manager: builds its rooms, wires them, and starts and stops them in order. No logic of its own.

Rooms (one file each): state (the cluster and its lock), worklist (what the next pass has to do),
transitions (every task and node state change), credentials, registration, nodes and services (commands),
queries (the read API), orchestrator (the reconcile pass, with scheduling and actions), executor and
engine_jobs (per-node queues of engine calls), heartbeat, events, resync, writer (tasks to the store), logs.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from pyswarm.manager.credentials import Credentials
from pyswarm.manager.engine_jobs import EngineJobs
from pyswarm.manager.events import EngineEvents
from pyswarm.manager.executor import Executor
from pyswarm.manager.heartbeat import Heartbeat
from pyswarm.manager.ids import tune_gc
from pyswarm.manager.images import ImageDistributor
from pyswarm.manager.links import EngineConnector, EngineFactory, NodeLink, NodeLinks, docker_engine_factory
from pyswarm.manager.logs import ServiceLogs
from pyswarm.manager.nodes import NodeCommands
from pyswarm.manager.orchestrator import Orchestrator
from pyswarm.manager.queries import ClusterReader
from pyswarm.manager.registration import Registration
from pyswarm.manager.resync import Resync
from pyswarm.manager.secret_delivery import SecretDelivery
from pyswarm.manager.secrets import ConfigCommands, SecretCommands
from pyswarm.manager.services import ServiceCommands
from pyswarm.manager.settings import Settings
from pyswarm.manager.state import ClusterState
from pyswarm.manager.store import SqliteStore, StateStore
from pyswarm.manager.transitions import Transitions, resume_unfinished_starts
from pyswarm.manager.worklist import MeshHook, WorkList
from pyswarm.manager.writer import TaskWriter
from pyswarm.model import ServiceSpec, TaskState


class Manager:
    def __init__(
        self, settings: Settings, engine_factory: EngineFactory = docker_engine_factory, store: StateStore | None = None
    ) -> None:
        self.settings = settings
        self.store: StateStore = store or SqliteStore(settings.data_dir)
        snapshot = self.store.load()
        resume_unfinished_starts(snapshot.tasks.values())
        self.state = state = ClusterState(snapshot)
        pending = {t.id for t in state.tasks.values() if t.state is TaskState.PENDING}
        self.work = work = WorkList(set(state.tasks), set(state.services), pending)
        self.connector = EngineConnector(engine_factory, settings.data_dir, settings.engine_timeout)
        self.links = NodeLinks(work.stopping)
        self.transitions = Transitions(state, work)
        self.executor = Executor(settings.engine_workers, settings.per_node_parallelism, work.stopping)
        self.delivery = SecretDelivery(state)
        self.engine_jobs = EngineJobs(
            state,
            work,
            self.transitions,
            self.links,
            self.connector,
            self.executor,
            settings.per_node_parallelism,
            self.delivery,
        )
        self.transitions.queue_stop = self.engine_jobs.queue_stop
        self.images = ImageDistributor(state, self.links, self.connector)
        self.engine_jobs.images = self.images
        self.writer = TaskWriter(state, work, self.store)
        self.writer.start()
        self.orchestrator = Orchestrator(
            state, work, self.transitions, self.links, self.engine_jobs, self.writer, settings.history_limit
        )
        self.events = EngineEvents(state, work, self.transitions, self.connector)
        self.resync = Resync(
            state, work, self.transitions, self.links, self.connector, self.executor, self.engine_jobs,
            settings.resync_interval,
        )  # fmt: skip
        self.heartbeat = Heartbeat(settings, state, work, self.store, self.transitions, self.links, self.connector)
        self.heartbeat.after_good_ping = self.resync.submit_if_due
        self.heartbeat.came_online = self._came_online
        self.links.on_start = self.heartbeat.add
        self.links.on_stop = self.engine_jobs.release
        self.credentials = Credentials(state, self.store, settings.data_dir)
        self.registration = Registration(
            state, work, self.store, self.transitions, self.credentials, self.links, self.connector
        )
        self.nodes = NodeCommands(
            state, work, self.store, self.transitions, self.links, self.connector, self.engine_jobs
        )
        self.secrets = SecretCommands(state, self.store)
        self.configs = ConfigCommands(state, self.store)
        self.services = ServiceCommands(
            state, work, self.store, settings.listen_port, self._with_file_ids, self.images.resolve
        )
        self.images.registry_auth = self.services.registry_auth
        manager_addr = f"{settings.advertise_addr}:{settings.listen_port}"
        self.read = ClusterReader(state, manager_addr, self.heartbeat.period)
        self.logs = ServiceLogs(state, self.links, self.connector)

    @property
    def cluster_id(self) -> str:
        return self.state.cluster_id

    def attach_mesh(self, mesh: MeshHook) -> None:
        """The routing mesh to tell about node and endpoint changes (before start)."""
        self.work.mesh = mesh

    def _came_online(self, link: NodeLink) -> None:
        self.events.watch(link)
        self.resync.submit(link)

    def _with_file_ids(self, spec: ServiceSpec) -> ServiceSpec:
        """The spec with its secret and config references checked and bound to their objects' ids."""
        return replace(spec, secrets=self.secrets.resolve(spec.secrets), configs=self.configs.resolve(spec.configs))

    def start(self) -> None:
        tune_gc()
        with self.state.lock:
            for node in self.state.nodes.values():
                self.links.start(node)
        self.orchestrator.start()

    def stop(self) -> None:
        self.work.stopping.set()
        self.work.wake.set()
        self.heartbeat.stop()
        for link in list(self.links.by_node.values()):
            self.links.stop(link)
        self.executor.shutdown()
        self.work.mesh.stop()
        self.orchestrator.stop()
        self.writer.stop()  # what the passes wrote lands before the store closes
        self.delivery.close()

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            self.store.close()
