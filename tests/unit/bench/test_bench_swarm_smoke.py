"""Smoke test of `python -m bench swarm|mesh` without root or a lab: the parsers, the figures and the table."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from bench import mesh
from bench.__main__ import main as bench_main
from bench.swarm.observe import docker_epoch, timeline
from bench.swarm.report import Stat, render, summarise

WRK_OUTPUT = """Running 10s test @ http://192.168.39.3:8080/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms    2.85ms  47.58ms   95.45%
    Req/Sec    14.10k     1.55k   17.71k    72.50%
  Latency Distribution
     50%  541.00us
     75%  732.00us
     90%    1.23ms
     99%   16.48ms
  280612 requests in 10.00s, 76.01MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:  28058.06
Transfer/sec:      7.60MB
"""


def test_wrk_output_is_parsed() -> None:
    result = mesh.parse_wrk(WRK_OUTPUT)
    assert result.requests_per_s == pytest.approx(28058.06)
    assert result.requests == 280612
    assert result.p50_s == pytest.approx(541e-6)
    assert result.p90_s == pytest.approx(1.23e-3)
    assert result.p99_s == pytest.approx(16.48e-3)
    assert result.errors == 6


def test_wrk_output_without_latency_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="--latency"):
        mesh.parse_wrk(WRK_OUTPUT.replace("  Latency Distribution\n", "").replace("     50%  541.00us\n", ""))


def test_docker_timestamps_with_nanoseconds() -> None:
    nanoseconds = docker_epoch("2026-01-02T03:04:05.123456789Z")
    assert nanoseconds == pytest.approx(docker_epoch("2026-01-02T03:04:05Z") + 0.123456)
    assert docker_epoch("2026-01-02T03:04:05+01:00") == pytest.approx(docker_epoch("2026-01-02T02:04:05Z"))


def test_timeline_counts_only_tasks_made_after_the_command() -> None:
    tasks: list[tuple[float, float | None]] = [(50.0, 51.0), (100.2, 101.0), (100.4, 102.5)]
    assert timeline(tasks, 100.0) == {
        "tasks_created": 2,
        "first_task_s": pytest.approx(0.2),
        "last_running_recorded_s": pytest.approx(2.5),
        "task_start_median_s": pytest.approx(1.45),
    }
    assert "last_running_recorded_s" not in timeline([(100.5, None)], 100.0)


def test_stat_text() -> None:
    assert Stat(5.2, 4.9, 5.61, 3).text() == "5.20 s [4.90-5.61]"
    assert Stat(0.0173, 0.015, 0.02, 3).text() == "17.3 ms [15.0-20.0]"
    assert Stat(2.0, 2.0, 2.0, 1).text() == "2.00 s"


def _document() -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    for rep in (1, 2, 3):
        for system, scale in (("swarm", 1.0), ("pyswarm", 0.4), ("engines", 0.3)):
            records += [
                {"system": system, "rep": rep, "scenario": "create", "seconds": 5.0 * scale + rep / 10, "cli_s": 0.1},
                {"system": system, "rep": rep, "scenario": "scale-up", "seconds": 9.0 * scale},
                {"system": system, "rep": rep, "scenario": "scale-down", "seconds": 8.0 * scale, "zero_running_s": 7.0},
            ]
        records.append(
            {
                "system": "pyswarm",
                "rep": rep,
                "scenario": "node-failure",
                "seconds": 2.5,
                "down_s": 1.5,
                "cpu_s_by_group": {"other": 2.0},
            }
        )
        records.append({"system": "swarm", "rep": rep, "scenario": "node-failure", "seconds": 20.0, "down_s": 15.0})
    records.append({"system": "pyswarm", "rep": 1, "scenario": "scale-series", "error": "boom"})
    light = {"p50_added_s": 8e-6, "p99_added_s": 3.7e-4}
    return {
        "kind": "swarm",
        "args": {"replicas": 30, "scale_to": 90, "cut_node": "node-03"},
        "records": records,
        "mesh": {
            "ratio": 0.93,
            "ratio_min": 0.9,
            "ratio_max": 0.95,
            "rounds": [{}, {}],
            "args": {"connections": 32},
            "direct_rps": 40000.0,
            "mesh_rps": 37200.0,
            "direct_cpu_us_per_request": 40.0,
            "mesh_cpu_us_per_request": 43.0,
            "p50_added_s": 4e-5,
            "p99_added_s": -1e-3,
            "light": light,
        },
        "swarm_mesh": {"connect": {"node-01": "refused", "node-02": "refused"}, "available": False},
    }


def test_summary_medians_ratios_and_goals() -> None:
    rows = {row["scenario"] + ":" + row["key"]: row for row in summarise(_document())}
    create = rows["create:seconds"]
    assert create["swarm"]["median"] == pytest.approx(5.2)
    assert create["pyswarm"]["median"] == pytest.approx(2.2)
    assert create["ratio"] == pytest.approx(2.2 / 5.2)
    assert create["met"] is True
    assert rows["node-failure:seconds"]["met"] is True  # 2.5 s ≤ 3 s
    assert rows["node-failure:down_s"]["met"] is None  # reported, no goal
    assert rows["scale-down:zero_running_s"]["pyswarm"]["median"] == pytest.approx(7.0)


def test_table_renders_and_flags_errors_and_noise() -> None:
    out = io.StringIO()
    document = _document()
    render(document, Console(file=out, width=160))
    text = out.getvalue()
    assert "create 30 → 30 running" in text
    assert "n/a: no IPVS (refused)" in text
    assert "0.93 [0.90-0.95]" in text
    assert "pyswarm rep 1 scale-series: boom" in text
    assert "a noisy figure" in text  # 2 s of other processes' CPU in a 2.5 s step
    json.dumps(document)  # the summary added to the document stays serialisable


def test_subcommands_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("swarm", "mesh"):
        with pytest.raises(SystemExit) as exit_info:
            bench_main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--pyswarm-env" in capsys.readouterr().out
