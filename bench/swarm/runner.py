"""One `python -m bench swarm` (or `mesh`) run on the lab: the lab checked (or brought up), every repetition's
sessions with the systems in rotating order, and the JSON document of all their records."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rich.console import Console

from bench.common import ROOT, environment
from bench.cpu import wait_quiet
from bench.swarm.config import (
    API_VERSION,
    MANAGER,
    SCALE_SCENARIOS,
    SETTLE_S,
    SYSTEMS,
    BenchError,
    SwarmArgs,
    step_record,
)
from bench.swarm.observe import Engines
from bench.swarm.scenarios import node_failure, pyswarm_mesh, scale_series, swarm_mesh
from bench.swarm.systems import Cluster, PyswarmCluster, SwarmCluster, engine_floor


def ssh_request_costs(lab: Any, samples: int = 20) -> dict[str, Any]:
    """What one docker API request costs the way the manager sends it (docker-py over SSH with paramiko), to a
    URL it used before and to a new one (a new container's path), against the same over the unix socket."""
    import uuid

    import docker

    node = lab.node("node-02")
    costs: dict[str, Any] = {"node": node.name, "samples": samples}
    for transport, url in (("unix", node.docker_host), ("ssh", node.engine_url)):
        client = docker.APIClient(base_url=url, version=API_VERSION, use_ssh_client=False, timeout=30)
        try:
            client.ping()
            t0 = time.monotonic()
            for _ in range(samples):
                client.ping()
            costs[f"{transport}_same_url_ms"] = (time.monotonic() - t0) / samples * 1000
            t0 = time.monotonic()
            for _ in range(samples):
                with contextlib.suppress(docker.errors.NotFound):
                    client.inspect_container(uuid.uuid4().hex)
            costs[f"{transport}_new_url_ms"] = (time.monotonic() - t0) / samples * 1000
        finally:
            client.close()
    return costs


def ensure_lab(console: Console) -> tuple[Any, bool]:
    """The running lab, or a fresh one; True if this run brought it up."""
    from pyswarm.lab import Lab, LabConfig
    from pyswarm.lab.config import LabNotFound

    try:
        lab = Lab.load()
    except LabNotFound:
        console.print("no lab is running: bringing one up (`pyswarm lab up`)")
        lab = Lab(LabConfig())
        lab.up()
        return lab, True
    unhealthy = [f"{s.node.name}: {s.state}" for s in lab.ls() if s.state != "running"]
    if unhealthy:
        raise SystemExit(f"the lab is not healthy ({', '.join(unhealthy)}): run `pyswarm lab up`")
    return lab, False


def check_lab(lab: Any, engines: Engines, args: SwarmArgs) -> None:
    """Refuse a lab that some swarm already uses: the benchmark makes and removes its own clusters."""
    names = set(engines.names)
    missing = {args.cut_node, args.mesh_node, args.mesh_entry, MANAGER} - names
    if missing or len(names) < 3:
        raise SystemExit(f"the benchmark needs a lab of at least 3 nodes (node-01..03); this one has {sorted(names)}")
    busy = []
    for node in lab.nodes:
        state = engines.api[node.name].info().get("Swarm", {}).get("LocalNodeState", "inactive")
        if state not in ("", "inactive"):
            busy.append(f"{node.name} is in a Docker swarm (docker swarm leave --force)")
        if (node.pyswarm_data_dir / "node.json").exists():
            busy.append(f"{node.name} is in a pyswarm swarm (pyswarm swarm leave --force)")
    if busy:
        raise SystemExit(
            "the lab is in use; leave those swarms (`pyswarm lab exec NODE -- ...`) or start a fresh lab with "
            "`pyswarm lab up`:\n  " + "\n  ".join(busy)
        )


def _session(
    cluster: Cluster, args: SwarmArgs, rep: int, console: Console, records: list[dict[str, Any]], extras: dict[str, Any]
) -> None:
    records.append(step_record(cluster.system, rep, "quiet", **wait_quiet(console, args.quiet_cores, args.quiet_wait)))
    t0 = time.monotonic()
    try:
        cluster.setup()
    except BenchError as exc:
        records.append(step_record(cluster.system, rep, "setup", error=str(exc)))
        console.print(f"  [red]{cluster.system} setup failed: {exc}[/]")
        cluster.teardown()  # what did come up must not stay for the next session
        return
    records.append(step_record(cluster.system, rep, "setup", seconds=time.monotonic() - t0))
    time.sleep(SETTLE_S)
    try:
        cli = [cluster.list_services() for _ in range(3)]
        records.append(step_record(cluster.system, rep, "cli", seconds=statistics.median(cli), samples=cli))
        if any(s in args.scenarios for s in SCALE_SCENARIOS):
            records.extend(scale_series(cluster, args, rep, console))
        if "node-failure" in args.scenarios:
            records.append(node_failure(cluster, args, rep, console))
        if "mesh" in args.scenarios and rep == 1:
            if isinstance(cluster, PyswarmCluster):
                extras["mesh"] = pyswarm_mesh(cluster, args, console)
            elif isinstance(cluster, SwarmCluster):
                extras["swarm_mesh"] = swarm_mesh(cluster, args, console)
    finally:
        cluster.teardown()


def run(args: SwarmArgs, console: Console, keep_lab: bool = False, systems: Sequence[str] = SYSTEMS) -> dict[str, Any]:
    lab, brought_up = ensure_lab(console)
    engines = Engines(lab)
    records: list[dict[str, Any]] = []
    extras: dict[str, Any] = {}
    began = time.monotonic()
    provenance = _provenance(lab)  # before the run: others may commit meanwhile
    try:
        check_lab(lab, engines, args)
        if any(s in args.scenarios for s in SCALE_SCENARIOS) and "pyswarm" in systems:
            extras["ssh_request_costs"] = ssh_request_costs(lab)
        for rep in range(1, args.repeat + 1):
            # Rotate who goes first, so that drift of the machine is shared out.
            order = [SYSTEMS[(i + rep - 1) % len(SYSTEMS)] for i in range(len(SYSTEMS))]
            order = [s for s in order if s in systems]
            console.print(f"[bold]repetition {rep}/{args.repeat}[/] ({' → '.join(order)})")
            for system in order:
                if system == "engines":
                    if args.floor and any(s in args.scenarios for s in SCALE_SCENARIOS):
                        records.append(
                            step_record(
                                "engines", rep, "quiet", **wait_quiet(console, args.quiet_cores, args.quiet_wait)
                            )
                        )
                        records.extend(engine_floor(engines, args, rep, console))
                    continue
                cluster: Cluster = (SwarmCluster if system == "swarm" else PyswarmCluster)(lab, engines, args)
                _session(cluster, args, rep, console, records, extras)
    finally:
        with contextlib.suppress(Exception):
            lab.heal(args.cut_node)
        engines.close()
        if brought_up and not keep_lab:
            console.print("taking down the lab this run brought up")
            lab.down()
    return {
        "kind": "swarm",
        "created_at": time.time(),
        "environment": {**environment(), **provenance},
        "args": {**asdict(args), "scenarios": list(args.scenarios)},
        "wall_s": time.monotonic() - began,
        "records": records,
        **extras,
    }


def _provenance(lab: Any) -> dict[str, Any]:
    """Which code and engines the figures belong to."""
    info: dict[str, Any] = {"nodes": len(lab.nodes)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        info["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "pyswarm"], capture_output=True, text=True)
        info["pyswarm_uncommitted"] = dirty.stdout.split("\n")[:20] if dirty.stdout.strip() else []
    with contextlib.suppress(Exception):
        info["engine_version"] = lab.status(MANAGER).engine_version
    return info
