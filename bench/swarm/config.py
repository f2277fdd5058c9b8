"""What a `python -m bench swarm` run is asked to do (SwarmArgs), the fixed names it uses on the lab, and the
shape of the records it collects."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.mesh import MeshArgs

SCENARIOS = ("create", "scale-up", "scale-down", "node-failure", "mesh")
SCALE_SCENARIOS = ("create", "scale-up", "scale-down")
SYSTEMS = ("swarm", "pyswarm", "engines")
IMAGE = "nginx:latest"
MANAGER = "node-01"
PYSWARM = str(Path(sys.executable).parent / "pyswarm")
SWARM_LABEL = "com.docker.swarm.service.name"
PYSWARM_LABEL = "com.pyswarm.service.name"
FLOOR_LABEL = "com.pyswarm.bench.floor"
MESH_PORT = 8080
ENGINE_PARALLELISM = 8  # pyswarm's default per-node parallelism: the floor gets the same
API_VERSION = "1.41"  # the lab's dockerd 20.10
SETTLE_S = 3.0  # after a cluster is set up: its first resyncs and mesh syncs are not what we measure


class BenchError(Exception):
    """A step of a scenario failed; the message says which and why."""


@dataclass(frozen=True)
class SwarmArgs:
    repeat: int = 3
    scenarios: tuple[str, ...] = SCENARIOS
    replicas: int = 30
    scale_to: int = 90
    cut_node: str = "node-03"
    mesh_node: str = "node-02"  # runs the mesh benchmark's only task
    mesh_entry: str = "node-03"  # runs no task: load enters the mesh here
    timeout: float = 120.0  # per step
    poll: float = 0.1
    floor: bool = True
    quiet_cores: float = 0.25  # before each session, wait for other processes to use less than this ...
    quiet_wait: float = 60.0  # ... for at most this long
    mesh: MeshArgs = field(default_factory=MeshArgs)
    pyswarm_env: dict[str, str] = field(default_factory=dict)
    pyswarm_init_args: tuple[str, ...] = ()  # e.g. ("--heartbeat", "0.5s"): to try settings other than the defaults


def step_record(system: str, rep: int, scenario: str, **figures: Any) -> dict[str, Any]:
    """One entry of the document's `records`: a step's figures, or its error."""
    return {"system": system, "rep": rep, "scenario": scenario, **figures}
