"""The systems compared: Docker swarm mode and pyswarm, each driven through its CLI inside node-01 (Cluster), and
the engines alone (engine_floor: the same containers made straight through the docker API, no orchestrator)."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.swarm.config import (
    ENGINE_PARALLELISM,
    FLOOR_LABEL,
    IMAGE,
    MANAGER,
    PYSWARM,
    PYSWARM_LABEL,
    SCALE_SCENARIOS,
    SWARM_LABEL,
    BenchError,
    SwarmArgs,
    step_record,
)
from bench.swarm.observe import Engines, docker_epoch, poll_until

# --- the two orchestrators --------------------------------------------------------------------------------


class Cluster:
    """One orchestrator on the lab, driven through its CLI inside node-01."""

    system = ""
    label_key = ""

    def __init__(self, lab: Any, engines: Engines, args: SwarmArgs) -> None:
        self.lab = lab
        self.engines = engines
        self.args = args
        self.env: dict[str, str] = {}
        self.addr = lab.node(MANAGER).addr

    def label(self, service: str) -> str:
        return f"{self.label_key}={service}"

    def run(self, node: str, argv: Sequence[str], check: bool = True, timeout: float = 120) -> tuple[float, str]:
        """(seconds, stdout) of argv inside node."""
        began = time.monotonic()
        try:
            done = self.lab.exec(node, list(argv), env=self.env, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{node}: `{' '.join(argv)}` timed out after {timeout:.0f} s") from None
        seconds = time.monotonic() - began
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-500:]
            raise BenchError(f"{node}: `{' '.join(argv)}` exited {done.returncode}: {detail}")
        return seconds, str(done.stdout)

    def cli(self, *argv: str, check: bool = True) -> float:
        return self.run(MANAGER, argv, check=check)[0]

    def wait_ready(self, nodes: Sequence[str], timeout: float = 60.0) -> float:
        def ready() -> bool:
            states = self.node_states()
            return all(states.get(name) == "ready" for name in nodes)

        return poll_until(ready, time.monotonic(), timeout, 0.2, f"{self.system}: nodes {', '.join(nodes)} ready")

    def workers(self) -> list[str]:
        return [name for name in self.engines.names if name != MANAGER]

    # What each system implements.
    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def create(self, service: str, replicas: int, *extra: str) -> float:
        raise NotImplementedError

    def scale(self, service: str, replicas: int) -> float:
        raise NotImplementedError

    def remove(self, service: str) -> float:
        raise NotImplementedError

    def list_services(self) -> float:
        raise NotImplementedError

    def node_states(self) -> dict[str, str]:
        """hostname -> ready / down / unknown / ..., as `node ls` shows it."""
        raise NotImplementedError

    def task_times(self, service: str) -> list[tuple[float, float | None]]:
        """(created, running since or None) of the service's tasks wanted running, as the orchestrator records them."""
        raise NotImplementedError


class SwarmCluster(Cluster):
    system = "swarm"
    label_key = SWARM_LABEL

    def setup(self) -> None:
        self.cli("docker", "swarm", "init", "--advertise-addr", self.addr)
        token = self.run(MANAGER, ["docker", "swarm", "join-token", "-q", "worker"])[1].strip()
        for name in self.workers():
            self.run(name, ["docker", "swarm", "join", "--token", token, f"{self.addr}:2377"])
        self.wait_ready(self.engines.names)

    def teardown(self) -> None:
        for name in [*self.workers(), MANAGER]:
            self.run(name, ["docker", "swarm", "leave", "--force"], check=False)
        self.engines.remove(SWARM_LABEL)

    def create(self, service: str, replicas: int, *extra: str) -> float:
        return self.cli(
            "docker",
            "service",
            "create",
            "-d",
            "-q",
            "--no-resolve-image",
            "--name",
            service,
            "--replicas",
            str(replicas),
            *extra,
            IMAGE,
        )

    def scale(self, service: str, replicas: int) -> float:
        return self.cli("docker", "service", "scale", "-d", f"{service}={replicas}")

    def remove(self, service: str) -> float:
        return self.cli("docker", "service", "rm", service, check=False)

    def list_services(self) -> float:
        return self.cli("docker", "service", "ls")

    def task_times(self, service: str) -> list[tuple[float, float | None]]:
        times: list[tuple[float, float | None]] = []
        for task in self.engines.api[MANAGER].tasks(filters={"service": service}):
            if task.get("DesiredState") != "running":
                continue
            status = task.get("Status") or {}
            running = docker_epoch(status["Timestamp"]) if status.get("State") == "running" else None
            times.append((docker_epoch(task["CreatedAt"]), running))
        return times

    def node_states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for node in self.engines.api[MANAGER].nodes():
            name = node["Description"]["Hostname"]
            # A node that left and joined again is listed twice; the live entry wins.
            if states.get(name) != "ready":
                states[name] = node["Status"]["State"]
        return states


class PyswarmCluster(Cluster):
    system = "pyswarm"
    label_key = PYSWARM_LABEL

    def __init__(self, lab: Any, engines: Engines, args: SwarmArgs) -> None:
        super().__init__(lab, engines, args)
        # The CLI's credential goes to a file of our own: the operator's ~/.config is left alone.
        self._tmp = tempfile.TemporaryDirectory(prefix="pyswarm-bench-")
        self.env = {"PYSWARM_CONFIG": str(Path(self._tmp.name) / "config.json"), **args.pyswarm_env}
        self._http: Any = None

    def setup(self) -> None:
        import httpx

        self.cli(PYSWARM, "swarm", "init", "--listen-addr", f"{self.addr}:2377", *self.args.pyswarm_init_args)
        token = self.run(MANAGER, [PYSWARM, "swarm", "join-token", "-q", "worker"])[1].strip()
        for name in self.workers():
            self.run(name, [PYSWARM, "swarm", "join", "--token", token, f"{self.addr}:2377"])
        config = json.loads(Path(self.env["PYSWARM_CONFIG"]).read_text())
        from pyswarm.cli.client import tls_context

        # The manager speaks TLS with the swarm's own CA: trust that CA, as the CLI does.
        self._http = httpx.Client(
            base_url=config["host"],
            headers={"Authorization": f"Bearer {config['token']}"},
            timeout=5.0,
            verify=tls_context(config["ca"]),
        )
        self.wait_ready(self.engines.names)

    def teardown(self) -> None:
        for name in [*self.workers(), MANAGER]:  # the manager's leave removes every service first
            self.run(name, [PYSWARM, "swarm", "leave", "--force"], check=False, timeout=90)
        if self._http is not None:
            self._http.close()
        self.engines.remove(PYSWARM_LABEL)
        self._tmp.cleanup()

    def create(self, service: str, replicas: int, *extra: str) -> float:
        return self.cli(
            PYSWARM, "service", "create", "-d", "--name", service, "--replicas", str(replicas), *extra, IMAGE
        )

    def scale(self, service: str, replicas: int) -> float:
        return self.cli(PYSWARM, "service", "scale", "-d", f"{service}={replicas}")

    def remove(self, service: str) -> float:
        return self.cli(PYSWARM, "service", "rm", service, check=False)

    def list_services(self) -> float:
        return self.cli(PYSWARM, "service", "ls")

    def node_states(self) -> dict[str, str]:
        import httpx

        try:
            nodes = self._http.get("/nodes").json()
        except httpx.HTTPError:
            return {}
        return {node["hostname"]: node["status"] for node in nodes}

    def task_times(self, service: str) -> list[tuple[float, float | None]]:
        tasks = self._http.get(f"/services/{service}/tasks").json()
        return [
            (float(t["created_at"]), float(t["state_changed_at"]) if t["state"] == "running" else None)
            for t in tasks
            if t["desired_state"] == "running"
        ]


# --- no orchestrator --------------------------------------------------------------------------------------


def engine_floor(engines: Engines, args: SwarmArgs, rep: int, console: Console) -> list[dict[str, Any]]:
    """The same containers without an orchestrator: docker API over the unix sockets, spread evenly."""
    label_value = f"rep-{rep}"
    label = f"{FLOOR_LABEL}={label_value}"
    pools = {name: ThreadPoolExecutor(ENGINE_PARALLELISM, thread_name_prefix=f"floor-{name}") for name in engines.names}
    made: list[tuple[str, str]] = []

    def start(index: int) -> tuple[str, str]:
        name = engines.names[index % len(engines.names)]
        api = engines.api[name]
        host_config = api.create_host_config(restart_policy={"Name": "no"})
        created = api.create_container(
            IMAGE,
            name=f"bench-floor-{rep}-{index}",
            labels={FLOOR_LABEL: label_value},
            host_config=host_config,
            detach=True,
        )
        api.start(created["Id"])
        return name, created["Id"]

    def batch(indexes: range) -> float:
        t0 = time.monotonic()
        futures = [pools[engines.names[i % len(engines.names)]].submit(start, i) for i in indexes]
        made.extend(f.result() for f in futures)
        return time.monotonic() - t0

    def stop(item: tuple[str, str]) -> None:
        api = engines.api[item[0]]
        api.stop(item[1], timeout=10)
        api.remove_container(item[1], force=True)

    wanted = [s for s in SCALE_SCENARIOS if s in args.scenarios]
    records: list[dict[str, Any]] = []
    try:
        figures = {"create": batch(range(args.replicas)), "scale-up": batch(range(args.replicas, args.scale_to))}
        t0 = time.monotonic()
        for future in [pools[name].submit(stop, (name, cid)) for name, cid in made]:
            future.result()
        figures["scale-down"] = time.monotonic() - t0
        made.clear()
        for name in wanted:
            records.append(step_record("engines", rep, name, seconds=figures[name]))
        console.print("  engines  " + ", ".join(f"{k} {v:.2f} s" for k, v in figures.items()))
    except Exception as exc:  # the floor is a reference: report it and go on
        records.append(step_record("engines", rep, "scale-series", error=f"{type(exc).__name__}: {exc}"))
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True)
        engines.remove(label)
    return records
