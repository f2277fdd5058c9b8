"""CPU meters every benchmark reads from /proc: the whole machine, one process, this process's threads, and
every process grouped by who it belongs to (the lab, the kernel, the benchmark, anyone else). Also the load
average and the wait for a quiet machine, since wall times mean little on a machine others keep busy."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

CLOCK_TICK = os.sysconf("SC_CLK_TCK")  # jiffies per second of /proc's CPU times
_KTHREAD = 0x00200000  # PF_KTHREAD in /proc/PID/stat's flags


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages, recorded next to wall times: others' load skews them."""
    return os.getloadavg()


def machine_jiffies() -> tuple[int, int, int]:
    """(total, idle + iowait, softirq) jiffies of all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4], fields[6]


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/.../stat line after the command name (which may hold spaces and parentheses)."""
    return stat.rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> tuple[float, float]:
    """(own utime+stime, waited-for children's) of a process, in seconds."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat").read_text())
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    children = (int(fields[13]) + int(fields[14])) / CLOCK_TICK
    return own, children


def thread_cpu() -> dict[int, float]:
    """CPU seconds per native thread id of this process (Linux)."""
    result: dict[int, float] = {}
    for entry in Path("/proc/self/task").iterdir():
        try:
            fields = _stat_fields((entry / "stat").read_text())
        except OSError:
            continue  # the thread ended meanwhile
        result[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICK
    return result


def by_thread_kind(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds in the window, summed over threads of the same kind (name without its node suffix)."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    spent: dict[str, float] = {}
    for tid, cpu in after.items():
        name = names.get(tid, "ended or native")
        kind = name.split("-")[0] if name != "MainThread" else name
        spent[kind] = spent.get(kind, 0.0) + cpu - before.get(tid, 0.0)
    return {k: round(v, 4) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v > 0}


class CpuMeter:
    """CPU spent during a step, by process name and by group: `lab` (anything in a node's network namespace:
    dockerds, containerd, shims, sshd, the pyswarm manager, the CLIs run there), `kernel` (kernel threads:
    softirq, kworkers), `bench` (this process) and `other` (everything else on the machine: someone else's
    load, which makes that step's figures suspect). A lab process's time includes that of its reaped
    children, so e.g. the short-lived `docker system dial-stdio` of an SSH session counts in sshd."""

    def __init__(self) -> None:
        self._host_netns = os.readlink("/proc/self/ns/net")
        self._me = os.getpid()
        self._start = self._snapshot()

    @staticmethod
    def _machine() -> tuple[int, int]:
        total, idle, _softirq = machine_jiffies()
        return total, idle

    def _group(self, entry: Path, flags: int) -> str:
        try:
            netns = os.readlink(entry / "ns" / "net")
        except OSError:
            netns = ""  # ended meanwhile, or a kernel thread
        if flags & _KTHREAD:
            return "kernel"
        if int(entry.name) == self._me:
            return "bench"
        if netns and netns != self._host_netns:
            return "lab"
        return "other"

    def _snapshot(self) -> tuple[tuple[int, int], dict[int, tuple[str, str, int]]]:
        procs: dict[int, tuple[str, str, int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = _stat_fields(stat)
            group = self._group(entry, int(fields[6]))
            # Other processes count their own time only: a shell that reaps a long test run would otherwise
            # charge the window with that run's whole lifetime.
            procs[int(entry.name)] = (name, group, sum(int(v) for v in fields[11 : 13 if group == "other" else 15]))
        return self._machine(), procs

    def stop(self, top: int = 8) -> dict[str, Any]:
        (total0, idle0), before = self._start
        (total1, idle1), after = self._snapshot()
        by_name: dict[str, float] = {}
        by_group: dict[str, float] = {}
        for pid, (name, group, ticks) in after.items():
            previous = before.get(pid)
            spent = (ticks - (previous[2] if previous and previous[0] == name else 0)) / CLOCK_TICK
            key = name if group == "lab" else f"{group}:{name}"  # "python" in the lab is the manager or a CLI
            by_name[key] = by_name.get(key, 0.0) + spent
            by_group[group] = by_group.get(group, 0.0) + spent
        busiest = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
        busy = 1 - (idle1 - idle0) / max(1, total1 - total0)
        return {
            "machine_busy_pct": round(100 * busy, 1),
            "cpu_s_by_group": {k: round(v, 2) for k, v in sorted(by_group.items())},
            "cpu_s_by_process": {k: round(v, 2) for k, v in busiest},
        }


def background_load(window: float = 2.0) -> float:
    """Cores used by processes that are neither the lab's, the kernel's nor this benchmark's, over `window`."""
    meter = CpuMeter()
    time.sleep(window)
    return float(meter.stop()["cpu_s_by_group"].get("other", 0.0)) / window


def wait_quiet(console: Console, limit: float, max_wait: float) -> dict[str, Any]:
    """Wait (up to max_wait) until other processes on the machine use less than `limit` cores: the figures of a
    2-core machine shared with someone's test run mean little. Returns what was seen, for the record."""
    began = time.monotonic()
    load = background_load()
    warned = False
    while load > limit and time.monotonic() - began < max_wait:
        if not warned:
            console.print(
                f"  [yellow]other processes use {load:.2f} cores: waiting up to {max_wait:.0f} s for quiet[/]"
            )
            warned = True
        load = background_load()
    return {"background_cores": round(load, 2), "waited_s": round(time.monotonic() - began, 1)}
