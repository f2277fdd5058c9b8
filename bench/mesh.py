"""Ingress throughput: requests/s through pyswarm's routing mesh, entering at a node that runs no task,
against requests/s straight to the task. Part of `python -m bench swarm` (scenario `mesh`) and runnable
alone as `python -m bench mesh`; bench/swarm/scenarios.py brings up the service, this module drives the load.

The load tool is wrk (Debian's 4.1): a C event loop, so on this 2-core machine it takes far less CPU per
request than any Python client would, and what it measures is mostly nginx, dockerd's DNAT and the kernel.
It still competes with them for the same two cores: both targets pay that equally, which is why the two
are alternated round by round and compared as a ratio, not as absolute figures.

"direct" is the task's own published host port on its node (node-02:HOST_PORT, Docker's DNAT to the
container): the container's bridge address is not routable from the host. The mesh target is another
node's published port (node-03:PUBLISHED), which pyswarm DNATs to that same node-02:HOST_PORT, so the
difference between the two is exactly the mesh's extra hop.

Docker's own mesh is reported as a fact, not a figure: it needs IPVS (the ip_vs module), and this kernel
has none, so every published port refuses connections (see `swarm_mesh_evidence`).
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.cpu import CLOCK_TICK, machine_jiffies

WRK = "wrk"
# An HTTP header wrk sends on every request to make each one a new TCP connection (and a new NAT entry).
CLOSE_HEADER = "Connection: close"

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    p50_s: float
    p90_s: float
    p99_s: float
    errors: int  # connect/read/write/timeout socket errors plus non-2xx/3xx responses
    cpu_busy_pct: float = 0.0  # of the whole machine during the run
    cpu_us_per_request: float = 0.0  # busy CPU time of the whole machine (all cores) per request
    softirq_pct: float = 0.0  # the kernel's packet work, of the whole machine


@dataclass(frozen=True)
class MeshArgs:
    rounds: int = 5
    duration: float = 10.0
    threads: int = 2
    connections: int = 32
    new_connections: bool = False  # Connection: close on every request
    # Then the same at light load (one connection): the latency one request sees, with CPU to spare.
    light_rounds: int = 3
    light_duration: float = 5.0


def parse_duration(text: str) -> float:
    """wrk's latency figures: `812.00us`, `1.23ms`, `2.01s`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """The figures of `wrk --latency` output."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if rate is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", output, re.M))
    if set(percentiles) != {"50", "90", "99"}:
        raise ValueError(f"no latency distribution in wrk output (run it with --latency):\n{output}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        requests=int(total.group(1)),
        p50_s=parse_duration(percentiles["50"]),
        p90_s=parse_duration(percentiles["90"]),
        p99_s=parse_duration(percentiles["99"]),
        errors=errors,
    )


def run_wrk(
    url: str, args: MeshArgs, threads: int | None = None, connections: int | None = None, duration: float | None = None
) -> WrkResult:
    threads = threads or args.threads
    connections = connections or args.connections
    duration = duration or args.duration
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if args.new_connections:
        argv += ["-H", CLOSE_HEADER]
    before = machine_jiffies()
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=duration + 60, check=False)
    after = machine_jiffies()
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    result = parse_wrk(done.stdout)
    total, idle, softirq = (a - b for a, b in zip(after, before, strict=True))
    busy_s = (total - idle) / CLOCK_TICK
    return replace(
        result,
        cpu_busy_pct=round(100 * (total - idle) / max(1, total), 1),
        cpu_us_per_request=round(busy_s / max(1, result.requests) * 1e6, 2),
        softirq_pct=round(100 * softirq / max(1, total), 1),
    )


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """One GET answered with 2xx (urllib: no extra dependency, fine for a readiness probe)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - lab URLs we build
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


# Starts watching the machine for one wrk run; what it returns, called after the run, gives figures to keep.
Observer = Callable[[], Callable[[], dict[str, Any]]]


def _alternate(
    mesh_url: str, direct_url: str, count: int, run: Callable[[str], WrkResult], observe: Observer | None
) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = []
    for index in range(count):
        order = ("direct", "mesh") if index % 2 == 0 else ("mesh", "direct")
        entry: dict[str, Any] = {"round": index + 1, "order": list(order)}
        for target in order:
            stop = observe() if observe else None
            entry[target] = asdict(run(mesh_url if target == "mesh" else direct_url))
            if stop is not None:
                entry[target]["observed"] = stop()
        entry["ratio"] = entry["mesh"]["requests_per_s"] / entry["direct"]["requests_per_s"]
        rounds.append(entry)
    return rounds


def measure(mesh_url: str, direct_url: str, args: MeshArgs, observe: Observer | None = None) -> dict[str, Any]:
    """Alternate direct and mesh runs (who goes first flips every round) and compare them.

    The ratio is the median of the per-round ratios: each round's pair ran back to back, so a slow spell of
    the machine affects both sides of that round alike. `observe` (e.g. the CPU by process group) is recorded
    with every run, so that a disturbed run can be told apart."""
    rounds = _alternate(mesh_url, direct_url, args.rounds, lambda url: run_wrk(url, args), observe)

    def median(target: str, key: str, of: list[dict[str, Any]] = rounds) -> float:
        return statistics.median(r[target][key] for r in of)

    light: dict[str, Any] = {}
    if args.light_rounds:
        light_rounds = _alternate(
            mesh_url,
            direct_url,
            args.light_rounds,
            lambda url: run_wrk(url, args, threads=1, connections=1, duration=args.light_duration),
            observe,
        )
        light = {
            "tool": f"wrk -t1 -c1 -d{args.light_duration:g}s --latency",
            "rounds": light_rounds,
            "ratio": statistics.median(r["ratio"] for r in light_rounds),
            "direct_p50_s": median("direct", "p50_s", light_rounds),
            "mesh_p50_s": median("mesh", "p50_s", light_rounds),
            "p50_added_s": median("mesh", "p50_s", light_rounds) - median("direct", "p50_s", light_rounds),
            "p99_added_s": median("mesh", "p99_s", light_rounds) - median("direct", "p99_s", light_rounds),
        }
    ratios = [r["ratio"] for r in rounds]
    return {
        "tool": f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency"
        + (f" -H '{CLOSE_HEADER}'" if args.new_connections else ""),
        "args": asdict(args),
        "mesh_url": mesh_url,
        "direct_url": direct_url,
        "rounds": rounds,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "direct_rps": median("direct", "requests_per_s"),
        "mesh_rps": median("mesh", "requests_per_s"),
        "direct_p50_s": median("direct", "p50_s"),
        "mesh_p50_s": median("mesh", "p50_s"),
        "direct_p99_s": median("direct", "p99_s"),
        "mesh_p99_s": median("mesh", "p99_s"),
        "p50_added_s": median("mesh", "p50_s") - median("direct", "p50_s"),
        "p99_added_s": median("mesh", "p99_s") - median("direct", "p99_s"),
        "direct_cpu_us_per_request": median("direct", "cpu_us_per_request"),
        "mesh_cpu_us_per_request": median("mesh", "cpu_us_per_request"),
        "cpu_busy_pct": median("mesh", "cpu_busy_pct"),
        "errors": sum(r[t]["errors"] for r in rounds for t in ("mesh", "direct")),
        "light": light,
    }


# --- Docker swarm's own mesh --------------------------------------------------------------------------


def connect_result(addr: str, port: int, timeout: float = 2.0) -> str:
    """`accepted`, `refused` or the error's name, for one TCP connect."""
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return "accepted"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return type(exc).__name__


def swarm_mesh_evidence(addrs: dict[str, str], port: int, dockerd_logs: dict[str, Path]) -> dict[str, Any]:
    """Why swarm's mesh cannot be measured here: what a connection to its published port gets on every
    node, whether the kernel has IPVS at all, and what each dockerd logged about it."""
    connects: dict[str, str] = {}
    for name, addr in addrs.items():
        # Retry for a moment: a port that comes up late must not be reported as refused.
        for _ in range(10):
            connects[name] = connect_result(addr, port)
            if connects[name] == "accepted":
                break
            time.sleep(0.5)
    log_lines: dict[str, list[str]] = {}
    for name, path in dockerd_logs.items():
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        lines = [line for line in text.splitlines() if "ipvs" in line.lower() or "ip_vs" in line]
        log_lines[name] = lines[-2:]
    return {
        "published_port": port,
        "connect": connects,
        "kernel_has_ipvs": Path("/proc/net/ip_vs").exists(),
        "kernel": Path("/proc/sys/kernel/osrelease").read_text().strip(),
        "dockerd_log": log_lines,
        "available": any(result == "accepted" for result in connects.values()),
    }
