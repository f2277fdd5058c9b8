"""The side-by-side table of `python -m bench swarm`: each system's median [min-max] per figure, pyswarm ÷ swarm,
the issue's goals, the ingress rows, and warnings about noisy or failed steps."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import met_cell
from bench.swarm.config import SYSTEMS

# The goals.
GOAL_RATIO = 0.5  # pyswarm ÷ swarm on create, scale-up, scale-down
GOAL_FAILOVER_S = 3.0  # node cut → all replicas running on the survivors
GOAL_MESH_RATIO = 0.9  # requests/s through the mesh ÷ direct
NOISY_CORES = 0.25  # a step during which other processes used more than this is flagged


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        return cls(statistics.median(values), min(values), max(values), len(values)) if values else None

    def text(self) -> str:
        """Seconds: `5.21 s [4.90-5.60]`, or in ms below one second: `17.3 ms [15.0-20.1]`."""
        scale, unit, digits = (1000.0, "ms", 1) if self.median < 1 else (1.0, "s", 2)
        text = f"{self.median * scale:.{digits}f} {unit}"
        if self.n > 1:
            text += f" [{self.low * scale:.{digits}f}-{self.high * scale:.{digits}f}]"
        return text


def _values(records: list[dict[str, Any]], system: str, scenario: str, key: str) -> list[float]:
    return [
        float(r[key])
        for r in records
        if r["system"] == system and r["scenario"] == scenario and r.get(key) is not None and "error" not in r
    ]


def summarise(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: each system's median [min-max], pyswarm ÷ swarm, the goal and whether it is met."""
    records = document["records"]
    args = document["args"]
    n, m, cut = args["replicas"], args["scale_to"], args["cut_node"]
    rows: list[dict[str, Any]] = []

    def add(label: str, scenario: str, key: str = "seconds", goal: str = "", check: str = "") -> None:
        stats = {s: Stat.of(_values(records, s, scenario, key)) for s in SYSTEMS}
        swarm, pyswarm = stats["swarm"], stats["pyswarm"]
        ratio = pyswarm.median / swarm.median if swarm and pyswarm and swarm.median else None
        met: bool | None = None
        if check == "ratio" and ratio is not None:
            met = ratio <= GOAL_RATIO
        elif check == "failover" and pyswarm is not None:
            met = pyswarm.median <= GOAL_FAILOVER_S
        rows.append(
            {
                "figure": label,
                "scenario": scenario,
                "key": key,
                **{s: (asdict(st) if st else None) for s, st in stats.items()},
                "ratio": ratio,
                "goal": goal,
                "met": met,
            }
        )

    add(f"create {n} → {n} running", "create", goal=f"≤ {GOAL_RATIO:g}x swarm", check="ratio")
    add(f"scale {n} → {m} running", "scale-up", goal=f"≤ {GOAL_RATIO:g}x swarm", check="ratio")
    add(f"scale {m} → 0, none left", "scale-down", goal=f"≤ {GOAL_RATIO:g}x swarm", check="ratio")
    add("  … until none running", "scale-down", key="zero_running_s")
    add(f"cut {cut} → {n} on the others", "node-failure", goal=f"≤ {GOAL_FAILOVER_S:g} s", check="failover")
    add(f"  … {cut} marked Down", "node-failure", key="down_s")
    add("CLI: `service create -d`", "create", key="cli_s")
    add("CLI: `service ls`", "cli")
    add("init + 2 joins, all Ready", "setup")
    return [r for r in rows if any(r[s] for s in SYSTEMS)]


def render(document: dict[str, Any], console: Console) -> None:
    """Print the table and the warnings under it; adds the table's rows to the document as `summary`."""
    rows = summarise(document)
    document["summary"] = rows
    console.print(_table(rows, document.get("mesh"), document.get("swarm_mesh")))
    _print_notes(document, console)


def _table(rows: list[dict[str, Any]], result: dict[str, Any] | None, evidence: dict[str, Any] | None) -> Table:
    table = Table(title="Docker swarm mode vs pyswarm on the same 3 lab engines (median \\[min-max])")
    for column in ("scenario", "swarm", "pyswarm", "÷ swarm", "engines alone", "goal", "met?"):
        table.add_column(column, justify="left" if column in ("scenario", "goal") else "right", no_wrap=True)

    def cell(stat: dict[str, Any] | None) -> str:
        return Stat(**stat).text() if stat else ""

    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
        table.add_row(
            row["figure"],
            cell(row["swarm"]),
            cell(row["pyswarm"]),
            ratio,
            cell(row["engines"]),
            row["goal"],
            met_cell(row["met"]),
        )
    if result or evidence:
        table.add_section()
        for label, swarm_text, pyswarm_text, goal, ok in _mesh_rows(result, evidence):
            table.add_row(label, swarm_text, pyswarm_text, "", "", goal, met_cell(ok))
    return table


def _print_notes(document: dict[str, Any], console: Console) -> None:
    """What a reader of the table must know: settings not the defaults, the cost of one engine request, noisy
    steps and rounds, and the errors."""
    changed = {k: v for k, v in document["args"].items() if k in ("pyswarm_env", "pyswarm_init_args") and v}
    if changed:
        console.print(f"[yellow]pyswarm ran with non-default settings: {changed}[/]")
    costs = document.get("ssh_request_costs")
    if costs:
        console.print(
            f"one docker API request, as the manager sends it (docker-py over SSH): {costs['ssh_same_url_ms']:.1f} ms "
            f"to a URL used before, {costs['ssh_new_url_ms']:.0f} ms to a new one "
            f"(unix socket: {costs['unix_same_url_ms']:.1f} / {costs['unix_new_url_ms']:.1f} ms)"
        )
    for record in document["records"]:
        other = (record.get("cpu_s_by_group") or {}).get("other", 0.0)
        if record.get("seconds") and other / record["seconds"] > NOISY_CORES:
            console.print(
                f"[yellow]{record['system']} rep {record['rep']} {record['scenario']}: other processes used "
                f"{other / record['seconds']:.2f} cores meanwhile: a noisy figure[/]"
            )
    mesh_result = document.get("mesh") or {}
    duration = (mesh_result.get("args") or {}).get("duration") or 1.0
    noisy_rounds = [
        r["round"]
        for r in mesh_result.get("rounds", [])
        for t in ("mesh", "direct")
        if ((r.get(t) or {}).get("observed") or {}).get("cpu_s_by_group", {}).get("other", 0.0) / duration > NOISY_CORES
    ]
    if noisy_rounds:
        console.print(f"[yellow]mesh rounds {sorted(set(noisy_rounds))}: other processes were busy meanwhile[/]")
    errors = [r for r in document["records"] if "error" in r]
    for record in errors:
        console.print(f"[red]{record['system']} rep {record['rep']} {record['scenario']}: {record['error']}[/]")


def failed(document: dict[str, Any]) -> bool:
    """Whether a step, or the mesh benchmark on either system, failed: the command then exits 1."""
    return bool(
        [r for r in document["records"] if "error" in r]
        or [k for k in ("mesh", "swarm_mesh") if isinstance(document.get(k), dict) and "error" in document[k]]
    )


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:+.0f} µs" if abs(seconds) < 1e-3 else f"{seconds * 1e3:+.2f} ms"


def _mesh_rows(
    result: dict[str, Any] | None, evidence: dict[str, Any] | None
) -> list[tuple[str, str, str, str, bool | None]]:
    """(figure, swarm, pyswarm, goal, met) rows of the ingress benchmark."""
    swarm_text = "not measured"
    if evidence and "error" not in evidence:
        outcomes = "/".join(sorted(set(evidence["connect"].values())))
        swarm_text = "works" if evidence["available"] else f"n/a: no IPVS ({outcomes})"
    if not result or "error" in result:
        error = (result or {}).get("error", "not measured")
        return [("ingress req/s, mesh ÷ direct", swarm_text, f"[red]{error[:50]}[/]", "", None)]
    ratio = f"{result['ratio']:.2f}"
    if len(result["rounds"]) > 1:
        ratio += f" [{result['ratio_min']:.2f}-{result['ratio_max']:.2f}]"
    rows: list[tuple[str, str, str, str, bool | None]] = [
        (
            "ingress req/s, mesh ÷ direct",
            swarm_text,
            ratio,
            f"≥ {GOAL_MESH_RATIO:g}",
            result["ratio"] >= GOAL_MESH_RATIO,
        ),
        ("  req/s, direct → mesh", "", f"{result['direct_rps']:,.0f} → {result['mesh_rps']:,.0f}", "", None),
        (
            "  CPU per request, direct → mesh",
            "",
            f"{result['direct_cpu_us_per_request']:.0f} → {result['mesh_cpu_us_per_request']:.0f} µs",
            "",
            None,
        ),
        (
            f"  added p50 / p99, {result['args']['connections']} conns",
            "",
            f"{_us(result['p50_added_s'])} / {_us(result['p99_added_s'])}",
            "",
            None,
        ),
    ]
    light = result.get("light") or {}
    if light:
        rows.append(
            ("  added p50 / p99, 1 conn", "", f"{_us(light['p50_added_s'])} / {_us(light['p99_added_s'])}", "", None)
        )
    return rows
