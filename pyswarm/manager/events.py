"""Engine events: one stream per online node, of the die, destroy and oom events of this cluster's
containers, reported to the transitions. A stream resumes from the last event's time after a reconnect."""

from __future__ import annotations

import threading

from pyswarm.drivers.engine import WATCHED_EVENTS, ContainerEvent, EngineError
from pyswarm.manager.links import EngineConnector, NodeLink
from pyswarm.manager.settings import EVENT_RECONNECT_DELAY, EVENT_STREAM_TIMEOUT
from pyswarm.manager.state import ClusterState
from pyswarm.manager.transitions import Transitions
from pyswarm.manager.worklist import WorkList
from pyswarm.model import LABEL_TASK_ID


class EngineEvents:
    def __init__(
        self, state: ClusterState, work: WorkList, transitions: Transitions, connector: EngineConnector
    ) -> None:
        self.state = state
        self.work = work
        self.transitions = transitions
        self.connector = connector

    def watch(self, link: NodeLink) -> None:
        """A new stream for the link (it came online); an older one ends by itself."""
        link.events_generation += 1
        threading.Thread(
            target=self._watch, args=(link, link.events_generation), daemon=True, name=f"events-{link.node_id[:8]}"
        ).start()

    def _watch(self, link: NodeLink, generation: int) -> None:
        """Over SSH the stream cannot be closed, so an outdated thread just ends at its next event or error."""
        while not link.stop.is_set() and link.events_generation == generation:
            since = link.last_event_time
            try:
                engine = self.connector.connect(link.url, EVENT_STREAM_TIMEOUT)
            except EngineError:
                link.stop.wait(EVENT_RECONNECT_DELAY)
                continue
            try:
                for event in engine.events(self.state.cluster_id, since):
                    if link.events_generation != generation:
                        return
                    link.last_event_time = event.time
                    self.on_event(link.node_id, event)
            except EngineError:
                link.stop.wait(EVENT_RECONNECT_DELAY)
            finally:
                engine.close()

    def on_event(self, node_id: str, event: ContainerEvent) -> None:
        if event.action not in WATCHED_EVENTS:
            return
        with self.state.lock:
            task = self.state.tasks.get(event.labels.get(LABEL_TASK_ID, ""))
            if task is None or not self.transitions.container_event(node_id, task, event):
                return
        self.work.notify()
