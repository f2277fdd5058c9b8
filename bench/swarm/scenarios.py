"""The scenarios one cluster runs in a session: create, scale-up and scale-down as one series on one service,
node-failure (a node's link cut), and the ingress mesh on either system. Each returns records for the document."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from bench import mesh
from bench.cpu import CpuMeter, wait_quiet
from bench.swarm.config import MESH_PORT, SCALE_SCENARIOS, BenchError, SwarmArgs, step_record
from bench.swarm.observe import poll_until, timeline
from bench.swarm.systems import Cluster, PyswarmCluster, SwarmCluster


def drain(cluster: Cluster, service: str, timeout: float = 60.0) -> dict[str, Any]:
    """Remove the service and wait until none of its containers is left; force-remove them after timeout."""
    cluster.remove(service)
    label = cluster.label(service)
    try:
        return {
            "cleanup_s": poll_until(
                lambda: cluster.engines.total(label, running=False) == 0,
                time.monotonic(),
                timeout,
                0.2,
                f"{service} removed",
            )
        }
    except BenchError:
        return {"cleanup_forced": cluster.engines.remove(label)}


def recorded_timeline(cluster: Cluster, service: str, wall0: float, wait: float = 5.0) -> dict[str, Any]:
    """The orchestrator's own record of the step; its task states may trail the engines by a moment."""
    deadline = time.monotonic() + wait
    while True:
        result = timeline(cluster.task_times(service), wall0)
        if "last_running_recorded_s" in result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def scale_series(cluster: Cluster, args: SwarmArgs, rep: int, console: Console) -> list[dict[str, Any]]:
    """create → scale-up → scale-down on one service; steps before a wanted one run untimed if not wanted."""
    engines = cluster.engines
    service = f"bench-{rep}"
    label = cluster.label(service)
    wanted = [s for s in SCALE_SCENARIOS if s in args.scenarios]
    last = max(SCALE_SCENARIOS.index(s) for s in wanted)
    zero_running: list[float] = []

    def none_left(t0: float) -> bool:
        if not zero_running and engines.total(label) == 0:
            zero_running.append(time.monotonic() - t0)
        return engines.total(label, running=False) == 0

    steps: list[tuple[str, Callable[[], float], Callable[[float], bool], str]] = [
        (
            "create",
            lambda: cluster.create(service, args.replicas),
            lambda _t0: engines.total(label) == args.replicas,
            f"{args.replicas} running",
        ),
        (
            "scale-up",
            lambda: cluster.scale(service, args.scale_to),
            lambda _t0: engines.total(label) == args.scale_to,
            f"{args.scale_to} running",
        ),
        ("scale-down", lambda: cluster.scale(service, 0), none_left, "no container left"),
    ]
    records: list[dict[str, Any]] = []
    try:
        for name, act, done, what in steps[: last + 1]:
            meter = CpuMeter()
            wall0, t0 = time.time(), time.monotonic()
            cli_s = act()
            seconds = poll_until(functools.partial(done, t0), t0, args.timeout, args.poll, f"{cluster.system} {what}")
            if name not in wanted:
                continue
            record = step_record(cluster.system, rep, name, seconds=seconds, cli_s=cli_s, **meter.stop())
            if name == "scale-down":
                record["zero_running_s"] = zero_running[0] if zero_running else seconds
            else:
                record["per_node"] = engines.count(label)
                with contextlib.suppress(Exception):  # an explanation, not a figure: never fail the step for it
                    record["timeline"] = recorded_timeline(cluster, service, wall0)
            records.append(record)
            console.print(f"  {cluster.system:8} {name:12} {seconds:6.2f} s   (CLI {cli_s:.2f} s)")
    except BenchError as exc:
        records.append(step_record(cluster.system, rep, "scale-series", error=str(exc), counts=engines.count(label)))
        console.print(f"  [red]{cluster.system} failed: {exc}[/]")
    finally:
        drain(cluster, service)
    return records


def node_failure(cluster: Cluster, args: SwarmArgs, rep: int, console: Console) -> dict[str, Any]:
    """N replicas over every node; cut one node's link; until N run on the others, and until it is Down."""
    engines, lab = cluster.engines, cluster.lab
    service = f"bench-fail-{rep}"
    label = cluster.label(service)
    cut = args.cut_node
    survivors = [name for name in engines.names if name != cut]
    record = step_record(cluster.system, rep, "node-failure")
    try:
        cluster.create(service, args.replicas)
        poll_until(
            lambda: engines.total(label) == args.replicas,
            time.monotonic(),
            args.timeout,
            args.poll,
            f"{cluster.system} {args.replicas} running before the cut",
        )
        record["before"] = engines.count(label)
        if record["before"].get(cut, 0) == 0:
            raise BenchError(f"no task on {cut} to lose: {record['before']}")
        recovered: float | None = None
        down: float | None = None
        meter = CpuMeter()
        t0 = time.monotonic()
        lab.cut(cut)
        while recovered is None or down is None:
            tick = time.monotonic()
            if recovered is None and engines.total(label, nodes=survivors) == args.replicas:
                recovered = tick - t0
            if down is None and cluster.node_states().get(cut) == "down":
                down = tick - t0
            if tick - t0 > args.timeout:
                raise BenchError(
                    f"after the cut: recovered={recovered}, marked down={down} within {args.timeout:.0f} s"
                )
            time.sleep(max(0.0, args.poll - (time.monotonic() - tick)))
        record.update(seconds=recovered, down_s=down, after=engines.count(label, nodes=survivors), **meter.stop())
        console.print(f"  {cluster.system:8} node-failure {recovered:6.2f} s   (marked Down after {down:.2f} s)")
    except BenchError as exc:
        record["error"] = str(exc)
        console.print(f"  [red]{cluster.system} node-failure failed: {exc}[/]")
    finally:
        lab.heal(cut)
        try:
            record["back_ready_s"] = cluster.wait_ready([cut], timeout=90)
        except BenchError as exc:
            record["back_error"] = str(exc)
        record.update(drain(cluster, service))
    return record


def pyswarm_mesh(cluster: PyswarmCluster, args: SwarmArgs, console: Console) -> dict[str, Any]:
    """One task pinned to mesh_node, load through mesh_entry (no task) and straight to the task."""
    engines, lab = cluster.engines, cluster.lab
    service = "bench-mesh"
    label = cluster.label(service)
    task_node, entry = lab.node(args.mesh_node), lab.node(args.mesh_entry)
    try:
        cluster.create(service, 1, "-p", f"{MESH_PORT}:80", "--constraint", f"node.hostname=={task_node.name}")
        poll_until(
            lambda: engines.count(label, nodes=[task_node.name])[task_node.name] == 1,
            time.monotonic(),
            args.timeout,
            args.poll,
            "mesh task running",
        )
        if engines.total(label, nodes=[entry.name]):
            raise BenchError(f"{entry.name} runs a task of {service}: it must not")
        api = engines.api[task_node.name]
        container = api.containers(filters={"label": label, "status": "running"})[0]
        ports = api.inspect_container(container["Id"])["NetworkSettings"]["Ports"]["80/tcp"]
        direct_url = f"http://{task_node.addr}:{ports[0]['HostPort']}/"
        mesh_url = f"http://{entry.addr}:{MESH_PORT}/"
        # The mesh rules land a moment after the task runs.
        poll_until(
            lambda: mesh.http_ok(mesh_url) and mesh.http_ok(direct_url),
            time.monotonic(),
            30,
            0.2,
            f"{mesh_url} answering",
        )
        console.print(
            f"  pyswarm  mesh: {args.mesh.rounds} rounds x 2 x {args.mesh.duration:g} s of wrk: "
            f"{mesh_url} (mesh) vs {direct_url} (direct)"
        )
        quiet = wait_quiet(console, args.quiet_cores, args.quiet_wait)
        result = {**mesh.measure(mesh_url, direct_url, args.mesh, observe=lambda: CpuMeter().stop), "quiet": quiet}
        console.print(
            f"  pyswarm  mesh: ratio {result['ratio']:.3f} "
            f"(mesh {result['mesh_rps']:,.0f}/s, direct {result['direct_rps']:,.0f}/s)"
        )
        return result
    except (BenchError, RuntimeError, ValueError) as exc:
        console.print(f"  [red]pyswarm mesh failed: {exc}[/]")
        return {"error": str(exc)}
    finally:
        drain(cluster, service)


def swarm_mesh(cluster: SwarmCluster, args: SwarmArgs, console: Console) -> dict[str, Any]:
    """The same service under swarm: does its published port answer anywhere?"""
    engines, lab = cluster.engines, cluster.lab
    service = "bench-mesh"
    label = cluster.label(service)
    result: dict[str, Any] = {}
    try:
        cluster.create(service, 1, "-p", f"{MESH_PORT}:80", "--constraint", f"node.hostname=={args.mesh_node}")
        result["task_running_s"] = poll_until(
            lambda: engines.count(label, nodes=[args.mesh_node])[args.mesh_node] == 1,
            time.monotonic(),
            args.timeout,
            args.poll,
            "swarm mesh task running",
        )
        result.update(
            mesh.swarm_mesh_evidence(
                {n.name: n.addr for n in lab.nodes}, MESH_PORT, {n.name: n.dockerd_log for n in lab.nodes}
            )
        )
        console.print(
            f"  swarm    mesh: task runs on {args.mesh_node}; port {MESH_PORT}: {result['connect']}; "
            f"kernel IPVS: {result['kernel_has_ipvs']}"
        )
    except BenchError as exc:
        result["error"] = str(exc)
    finally:
        drain(cluster, service)
    return result
