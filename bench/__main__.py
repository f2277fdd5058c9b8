"""`python -m bench SUBCOMMAND`: pyswarm's benchmarks. Each prints a table and writes every run's raw
figures to a JSON file (default bench-results/<kind>-<time>.json; the path is printed).

    python -m bench sim                          # 1k nodes x 100k tasks, 5k nodes x 150k tasks
    python -m bench sim --nodes 10 --tasks 100   # one custom size
    python -m bench idle                         # manager CPU while idle, in process (MemoryEngines)
    python -m bench idle --lab                   # ... of the lab's running manager (node-01)
    python -m bench swarm                        # Docker swarm mode vs pyswarm on the lab (root)
    python -m bench mesh                         # ingress throughput: mesh vs direct (root)
    python -m bench image-ship                   # pyswarm image push vs docker save | docker load by hand (root)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import idle, image_ship, sim
from bench.common import emit_result, run_child
from bench.mesh import MeshArgs
from bench.report import report, write_document
from bench.swarm import config as swarm_config
from bench.swarm import report as swarm_report
from bench.swarm import runner as swarm_runner

# --- the parser: every command's arguments ----------------------------------------------------------------
# The only parser: the benchmark modules take dataclasses (SimArgs, IdleArgs, SwarmArgs, MeshArgs), never argv.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sim(sub)
    _add_idle(sub)
    _add_swarm(sub)
    _add_mesh(sub)
    _add_image_ship(sub)
    p_run = sub.add_parser("_run", help=argparse.SUPPRESS)  # one scenario in a fresh process (run_child)
    p_run.add_argument("kind")
    p_run.add_argument("args")
    return parser


def _add_sim(sub: Any) -> None:
    p_sim = sub.add_parser("sim", help="the control plane at scale, against simulated engines")
    p_sim.add_argument("--scenario", action="append", help=f"one of {', '.join(sim.SCENARIOS)} (repeatable)")
    p_sim.add_argument("--nodes", type=int, help="a custom size instead of the scenarios (with --tasks)")
    p_sim.add_argument("--tasks", type=int)
    p_sim.add_argument("--services", type=int, help="how many services share the tasks (default 1000)")
    p_sim.add_argument("--timeout", type=float, default=600.0, help="give up on a scenario after this (s)")
    p_sim.add_argument("--json", type=Path, help="where to write the raw figures")


def _add_idle(sub: Any) -> None:
    p_idle = sub.add_parser("idle", help="the manager's CPU while nothing changes")
    p_idle.add_argument("--duration", type=float, default=60.0, help="the measured window, seconds (default 60)")
    p_idle.add_argument("--nodes", type=int, default=3)
    p_idle.add_argument("--tasks", type=int, default=100)
    p_idle.add_argument("--services", type=int, default=10)
    p_idle.add_argument("--settle", type=float, default=5.0, help="wait this long once all runs, before the window")
    p_idle.add_argument("--lab", action="store_true", help="measure the lab's running manager instead")
    p_idle.add_argument("--lab-dir", type=Path, help="the lab dir (default $PYSWARM_LAB_DIR or /var/lib/pyswarm-lab)")
    p_idle.add_argument("--node", default="node-01", help="the lab node the manager runs on (default node-01)")
    p_idle.add_argument("--pid", type=int, help="measure this running manager process instead")
    p_idle.add_argument("--json", type=Path, help="where to write the raw figures")


def _add_swarm(sub: Any) -> None:
    scenarios, systems = swarm_config.SCENARIOS, swarm_config.SYSTEMS
    p_swarm = sub.add_parser("swarm", help="Docker swarm mode vs pyswarm on the lab's real engines (root)")
    p_swarm.add_argument("--repeat", type=int, default=3, help="repetitions of every scenario (default 3)")
    p_swarm.add_argument(
        "--scenarios", default=",".join(scenarios), help=f"comma-separated subset of {','.join(scenarios)}"
    )
    p_swarm.add_argument("--systems", default=",".join(systems), help=f"subset of {','.join(systems)}")
    p_swarm.add_argument("--replicas", type=int, default=30)
    p_swarm.add_argument("--scale-to", type=int, default=90)
    p_swarm.add_argument("--timeout", type=float, default=120.0, help="give up on a step after this (s)")
    p_swarm.add_argument("--no-floor", action="store_true", help="skip the engines-alone reference runs")
    _add_mesh_options(p_swarm)
    _add_lab_run_options(p_swarm)


def _add_mesh(sub: Any) -> None:
    p_mesh = sub.add_parser("mesh", help="pyswarm's ingress throughput: through the mesh vs direct (root)")
    _add_mesh_options(p_mesh)
    _add_lab_run_options(p_mesh)


def _add_image_ship(sub: Any) -> None:
    defaults = image_ship.ShipArgs()
    p_ship = sub.add_parser("image-ship", help="pyswarm image push vs docker save | docker load by hand, to each node")
    p_ship.add_argument("--size-mb", type=int, default=defaults.size_mb, help="size of the generated image (128)")
    p_ship.add_argument("--image", default="", help="ship this image of the source engine instead")
    p_ship.add_argument("--source", default="", help="the engine to save from (default: a scratch dockerd, root)")
    p_ship.add_argument(
        "--nodes",
        action="append",
        default=[],
        metavar="URL,URL,...",
        help="the nodes' engine URLs over one transport (repeatable, one per transport; default: the lab's)",
    )
    p_ship.add_argument("--pyswarm-config", default="", help="client config of a running manager of these nodes")
    p_ship.add_argument("--repeat", type=int, default=defaults.repeat, help="rounds of every variant (2)")
    p_ship.add_argument("--quiet-wait", type=float, default=defaults.quiet_wait, help="wait for quiet, s (60)")
    p_ship.add_argument("--keep-lab", action="store_true", help="leave a lab this run brought up running")
    p_ship.add_argument("--json", type=Path, help="where to write the raw figures")


def _add_mesh_options(parser: argparse.ArgumentParser) -> None:
    defaults = MeshArgs()
    parser.add_argument("--mesh-rounds", type=int, default=defaults.rounds, help="wrk rounds per target (5)")
    parser.add_argument("--mesh-duration", type=float, default=defaults.duration, help="seconds per wrk run (10)")
    parser.add_argument("--mesh-connections", type=int, default=defaults.connections, help="wrk -c (32)")
    parser.add_argument("--mesh-threads", type=int, default=defaults.threads, help="wrk -t (2)")
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="send `Connection: close`: every request a new TCP connection and NAT entry",
    )


def _add_lab_run_options(parser: argparse.ArgumentParser) -> None:
    """What `swarm` and `mesh` share: pyswarm's settings, the lab's fate, the quiet wait, the output file."""
    parser.add_argument(
        "--pyswarm-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for pyswarm's CLI and manager (e.g. PYTHONPATH to try a change)",
    )
    parser.add_argument(
        "--pyswarm-init-args",
        default="",
        metavar="ARGS",
        help="extra arguments of `pyswarm swarm init`, e.g. '--heartbeat 0.5s' (not the defaults)",
    )
    parser.add_argument("--keep-lab", action="store_true", help="leave a lab this run brought up running")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each session, wait up to this long (s) for other processes to go quiet",
    )
    parser.add_argument("--json", type=Path, help="where to write the raw figures")


# --- the commands -----------------------------------------------------------------------------------------


def _sim(options: argparse.Namespace, console: Console) -> int:
    if options.nodes or options.tasks:
        if not (options.nodes and options.tasks):
            raise SystemExit("--nodes and --tasks go together")
        name = f"{options.nodes}-nodes-{options.tasks}-tasks"
        chosen = [sim.SimArgs(name, nodes=options.nodes, tasks=options.tasks)]
    else:
        names = options.scenario or list(sim.SCENARIOS)
        unknown = [n for n in names if n not in sim.SCENARIOS]
        if unknown:
            raise SystemExit(f"unknown scenario {unknown[0]!r}; known: {', '.join(sim.SCENARIOS)}")
        chosen = [sim.SCENARIOS[n] for n in names]
    runs = []
    for args in chosen:
        services = min(options.services or args.services, args.tasks)
        args = sim.SimArgs(**{**args.__dict__, "services": services, "timeout": options.timeout})
        sizes = f"{args.nodes:,} nodes, {args.tasks:,} tasks, {args.services:,} services"
        console.print(f"[bold]sim[/] {args.scenario}: {sizes}")
        runs.append(sim.sized(run_child("sim", args.__dict__, timeout=args.timeout + 300)))
    title = "Simulated scale (control plane against MemoryEngines)"
    return report("sim", title, runs, sim.figures, options.json, console)


def _idle(options: argparse.Namespace, console: Console) -> int:
    if options.lab or options.pid:
        runs = [_idle_running_manager(options, console)]
    else:
        args = idle.IdleArgs(
            nodes=options.nodes,
            tasks=options.tasks,
            services=options.services,
            duration=options.duration,
            settle=options.settle,
        )
        console.print(f"[bold]idle[/] in process: {args.nodes} nodes, {args.tasks} tasks, {args.duration:.0f} s window")
        runs = [run_child("idle", args.__dict__, timeout=args.duration + args.timeout + 60)]
    for run in runs:
        if run.get("cpu_by_thread"):
            console.print("CPU seconds by thread kind:", run["cpu_by_thread"])
    title = "Idle cost (manager CPU while nothing changes)"
    return report("idle", title, runs, idle.figures, options.json, console)


def _idle_running_manager(options: argparse.Namespace, console: Console) -> dict[str, Any]:
    """`idle --pid` or `idle --lab`: a manager process that is already running."""
    pid_file = None
    if options.pid:
        pid = options.pid
    else:
        pid_file = idle.lab_pid_file(options.lab_dir, options.node)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"no running manager: cannot read {pid_file} ({exc})") from None
    if not Path(f"/proc/{pid}").exists():
        raise SystemExit(f"process {pid} is not running")
    scenario = f"idle-lab-{options.node}" if options.lab else f"idle-pid-{pid}"
    console.print(f"[bold]idle[/] {scenario}: manager pid {pid}, {options.duration:.0f} s window")
    return idle.measure_pid(pid, options.duration, scenario, pid_file.parent if pid_file else None)


def _env_pairs(items: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--pyswarm-env wants KEY=VALUE, not {item!r}")
        pairs[key] = value
    return pairs


def _pyswarm_settings(options: argparse.Namespace) -> dict[str, Any]:
    """The SwarmArgs fields `swarm` and `mesh` share."""
    return {
        "pyswarm_env": _env_pairs(options.pyswarm_env),
        "pyswarm_init_args": tuple(shlex.split(options.pyswarm_init_args)),
        "quiet_wait": options.quiet_wait,
    }


def _swarm_args(options: argparse.Namespace) -> tuple[swarm_config.SwarmArgs, tuple[str, ...]]:
    """The run `swarm` or `mesh` asks for, and the systems it compares."""
    mesh_args = MeshArgs(
        rounds=options.mesh_rounds,
        duration=options.mesh_duration,
        threads=options.mesh_threads,
        connections=options.mesh_connections,
        new_connections=options.new_connections,
    )
    if options.command == "mesh":
        args = swarm_config.SwarmArgs(repeat=1, scenarios=("mesh",), mesh=mesh_args, **_pyswarm_settings(options))
        return args, ("pyswarm",)
    known_scenarios, known_systems = swarm_config.SCENARIOS, swarm_config.SYSTEMS
    scenarios = tuple(s.strip() for s in options.scenarios.split(",") if s.strip())
    systems = tuple(s.strip() for s in options.systems.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in known_scenarios] + [s for s in systems if s not in known_systems]
    if unknown or not scenarios or options.repeat < 1:
        raise SystemExit(f"unknown scenario or system {unknown}; scenarios: {', '.join(known_scenarios)}")
    args = swarm_config.SwarmArgs(
        repeat=options.repeat,
        scenarios=scenarios,
        replicas=options.replicas,
        scale_to=options.scale_to,
        timeout=options.timeout,
        floor=not options.no_floor,
        mesh=mesh_args,
        **_pyswarm_settings(options),
    )
    return args, systems


def _swarm(options: argparse.Namespace, console: Console) -> int:
    """`swarm` and `mesh`: on the lab, as root."""
    if os.geteuid() != 0:
        raise SystemExit("this benchmark drives the lab (network namespaces, dockerds): run it as root")
    if not console.is_terminal:
        console = Console(width=160)  # the side-by-side table is wider than the default 120 of a pipe
    args, systems = _swarm_args(options)
    document = swarm_runner.run(args, console, keep_lab=options.keep_lab, systems=systems)
    if options.command == "mesh":
        document["kind"] = "mesh"
    swarm_report.render(document, console)
    path = write_document(document, options.json, document["kind"])
    console.print(f"raw figures: {path}")
    return 1 if swarm_report.failed(document) else 0


def _image_ship(options: argparse.Namespace, console: Console) -> int:
    if options.repeat < 1 or options.size_mb < 1:
        raise SystemExit("--repeat and --size-mb must be at least 1")
    args = image_ship.ShipArgs(
        size_mb=options.size_mb,
        image=options.image,
        source=options.source,
        transports=image_ship.transport_sets(options.nodes),
        pyswarm_config=options.pyswarm_config,
        repeat=options.repeat,
        quiet_wait=options.quiet_wait,
        keep_lab=options.keep_lab,
    )
    try:
        document = image_ship.run(args, console)
    except image_ship.ShipError as exc:
        raise SystemExit(f"image-ship: {exc}") from None
    image_ship.render(document, console)
    path = write_document(document, options.json, "image-ship")
    console.print(f"raw figures: {path}")
    return 1 if image_ship.failed(document) else 0


def _run_child(kind: str, raw: str) -> int:
    """Internal: one scenario in this fresh process (see bench.common.run_child)."""
    data = json.loads(raw)
    result: dict[str, Any] = {"kind": kind, **data}
    try:
        if kind == "sim":
            sim.run(sim.SimArgs(**data), result)
        elif kind == "idle":
            idle.run(idle.IdleArgs(**data), result)
        else:
            raise SystemExit(f"unknown kind {kind!r}")
    except Exception as exc:  # report what was measured up to the failure
        result["error"] = f"{type(exc).__name__}: {exc}"
    emit_result(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.command == "_run":
        return _run_child(options.kind, options.args)
    console = Console(width=None if sys.stdout.isatty() else 120)
    if options.command in ("swarm", "mesh"):
        return _swarm(options, console)
    if options.command == "sim":
        return _sim(options, console)
    if options.command == "image-ship":
        return _image_ship(options, console)
    return _idle(options, console)


if __name__ == "__main__":
    sys.exit(main())
