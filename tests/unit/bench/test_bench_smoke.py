"""Smoke test of `python -m bench sim|idle` at tiny sizes: the code runs, every task gets to running, and the
JSON holds the figures the table shows. The real sizes are benchmarks, never run by the test suite."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import main as bench_main

SIM_FIGURES = {
    "placed_s",
    "running_s",
    "placed_per_s",
    "running_per_s",
    "create_s",
    "cpu_us_per_task",
    "steady_pass_s",
    "full_pass_s",
    "ingress_endpoints_s",
    "ingress_render_s",
    "ingress_diff_s",
    "ingress_rules",
    "peak_rss_mib",
    "peak_threads",
    "progress",
}


def test_sim_runs_every_task_and_writes_the_figures(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    assert bench_main(["sim", "--nodes", "10", "--tasks", "100", "--services", "5", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["kind"] == "sim" and "environment" in document
    (run,) = document["runs"]
    assert "error" not in run, run.get("error")
    assert set(run) >= SIM_FIGURES
    assert run["nodes"] == 10 and run["tasks"] == 100 and run["services"] == 5
    assert run["all_running"] is True and run["containers"] == 100 and run["extra_tasks"] == 0
    assert run["progress"][-1][2] >= 100  # the store says every task runs
    assert run["ingress_services"] == 5 and run["ingress_endpoints"] == 100


def test_idle_measures_the_manager_cpu(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    argv = ["idle", "--duration", "1", "--settle", "0.2", "--tasks", "12", "--services", "3", "--json", str(out)]
    assert bench_main(argv) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert "error" not in run, run.get("error")
    assert run["mode"] == "memory" and run["tasks"] == 12
    assert 0 <= run["cpu_percent"] < 100 and run["duration_s"] >= 1
    assert run["changes"] == 0  # nothing changes: no pass runs
