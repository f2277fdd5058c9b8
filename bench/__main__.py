"""`python -m bench SUBCOMMAND`: pyswarm's benchmarks. Each prints a table and writes every run's raw
figures to a JSON file (default bench-results/<kind>-<time>.json; the path is printed).

    python -m bench sim                          # 1k nodes x 100k tasks, 5k nodes x 150k tasks
    python -m bench sim --nodes 10 --tasks 100   # one custom size
    python -m bench idle                         # manager CPU while idle, in process (MemoryEngines)
    python -m bench idle --lab                   # ... of the lab's running manager (node-01)
    python -m bench swarm                        # Docker swarm mode vs pyswarm on the lab (root)
    python -m bench mesh                         # ingress throughput: mesh vs direct (root)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import idle, sim
from bench import swarm as swarm_bench
from bench.common import emit_result, render_table, run_child, write_json


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
    return _report("sim", "Simulated scale (control plane against MemoryEngines)", runs, sim.figures, options, console)


def _idle(options: argparse.Namespace, console: Console) -> int:
    if options.lab or options.pid:
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
        runs = [idle.measure_pid(pid, options.duration, scenario, pid_file.parent if pid_file else None)]
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
    return _report("idle", "Idle cost (manager CPU while nothing changes)", runs, idle.figures, options, console)


def _report(
    kind: str, title: str, runs: list[dict[str, Any]], figures: Any, options: argparse.Namespace, console: Console
) -> int:
    render_table(title, runs, figures, console)
    path = write_json(kind, runs, options.json)
    console.print(f"raw figures: {path}")
    return 1 if any("error" in run for run in runs) else 0


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
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_sim = sub.add_parser("sim", help="the control plane at scale, against simulated engines")
    p_sim.add_argument("--scenario", action="append", help=f"one of {', '.join(sim.SCENARIOS)} (repeatable)")
    p_sim.add_argument("--nodes", type=int, help="a custom size instead of the scenarios (with --tasks)")
    p_sim.add_argument("--tasks", type=int)
    p_sim.add_argument("--services", type=int, help="how many services share the tasks (default 1000)")
    p_sim.add_argument("--timeout", type=float, default=600.0, help="give up on a scenario after this (s)")
    p_sim.add_argument("--json", type=Path, help="where to write the raw figures")

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

    swarm_bench.add_parsers(sub)  # swarm, mesh

    p_run = sub.add_parser("_run", help=argparse.SUPPRESS)
    p_run.add_argument("kind")
    p_run.add_argument("args")

    options = parser.parse_args(argv)
    if options.command == "_run":
        return _run_child(options.kind, options.args)
    console = Console(width=None if sys.stdout.isatty() else 120)
    if options.command in ("swarm", "mesh"):
        return swarm_bench.main(options, console)
    if options.command == "sim":
        return _sim(options, console)
    return _idle(options, console)


if __name__ == "__main__":
    sys.exit(main())
