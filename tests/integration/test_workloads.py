"""Real applications on the lab's real engines: volumes, reservations, health checks, secrets, configs,
container settings, jobs, and the logs of tasks that died. Each runs the CLI as a user would."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.swarm import PYSWARM, Swarm, wait_until

BUSYBOX = "busybox:latest"
ON_NODE_01 = ("--constraint", "node.hostname==node-01")


@pytest.fixture(autouse=True)
def no_services_left(swarm: Swarm) -> Iterator[None]:
    yield
    for service in swarm.json("service", "ls"):
        swarm.cli("service", "rm", service["id"], check=False)
    wait_until(lambda: not any(swarm.all_containers().values()), what="every task's container removed")


def docker(swarm: Swarm, node: str, *args: str) -> str:
    return swarm.lab.exec(node, ["docker", *args]).stdout


def one_container(swarm: Swarm, service: str) -> tuple[str, str]:
    """(node, container name) of the service's one running task."""
    task = swarm.running_tasks(service)[0]
    return task["node"], f"{service}.{task['slot']}.{task['id']}"


def logs(swarm: Swarm, service: str, *flags: str) -> str:
    return swarm.cli("service", "logs", *flags, service).stdout


def test_a_volume_keeps_its_data_across_a_task_replacement(swarm: Swarm) -> None:
    script = "echo run-$(date +%s%N) >> /data/runs; sleep 3600"
    swarm.cli(
        "service", "create", "--name", "vol", *ON_NODE_01, "--mount", "type=volume,source=keep,target=/data",
        BUSYBOX, "sh", "-c", script,
    )  # fmt: skip
    first = swarm.running_tasks("vol")[0]["id"]
    swarm.cli("service", "update", "--force", "vol")
    wait_until(lambda: [t["id"] for t in swarm.running_tasks("vol")] not in ([], [first]), what="a new task")
    runs = docker(swarm, "node-01", "run", "--rm", "-v", "keep:/data", BUSYBOX, "cat", "/data/runs").split()
    assert len(runs) == 2 and len(set(runs)) == 2, runs
    swarm.cli("service", "rm", "vol")
    wait_until(lambda: not swarm.containers("node-01"), what="vol's container removed")
    docker(swarm, "node-01", "volume", "rm", "keep")


def test_a_reservation_no_node_can_meet_stays_pending_with_the_reason(swarm: Swarm) -> None:
    created = swarm.cli("service", "create", "-d", "--name", "big", "--reserve-memory", "100g", BUSYBOX, "sleep", "1d")
    assert created.returncode == 0
    wait_until(lambda: swarm.tasks("big") and swarm.tasks("big")[0]["state"] == "pending", what="a pending task")
    task = swarm.tasks("big")[0]
    assert task["message"] == "no suitable node (insufficient resources on 3 nodes)", task
    # A reservation that fits runs, and the limit reaches the container.
    swarm.cli("service", "create", "--name", "fits", "--reserve-memory", "64m", "--limit-memory", "128m",
              "--limit-cpu", "0.5", BUSYBOX, "sleep", "1d")  # fmt: skip
    node, name = one_container(swarm, "fits")
    host = json.loads(docker(swarm, node, "inspect", name))[0]["HostConfig"]
    assert (host["Memory"], host["NanoCpus"]) == (128 << 20, 500_000_000)


def test_a_failing_health_check_never_reaches_running_and_is_replaced(swarm: Swarm) -> None:
    swarm.cli(
        "service", "create", "-d", "--name", "sick", "--health-cmd", "exit 1", "--health-interval", "1s",
        "--health-retries", "1", "--restart-delay", "1s", BUSYBOX, "sleep", "1d",
    )  # fmt: skip

    def failed() -> list[dict[str, object]]:
        return [t for t in swarm.json("service", "ps", "sick") if t["state"] == "failed"]

    wait_until(lambda: len(failed()) >= 2, timeout=60, what="two unhealthy tasks failed")
    assert all(t["error"] == "task: non-zero exit (137): dockerexec: unhealthy container" for t in failed())
    assert not swarm.running_tasks("sick")
    assert swarm.json("service", "ls")[0]["running"] == 0
    # A passing check: starting, then running once healthy.
    swarm.cli("service", "create", "--name", "well", "--health-cmd", "true", "--health-interval", "1s",
              BUSYBOX, "sleep", "1d")  # fmt: skip
    assert swarm.running_tasks("well")


def test_a_secret_is_readable_in_the_task_and_nowhere_else(swarm: Swarm) -> None:
    value = "s3cret-value-" + "x" * 8
    created = subprocess.run(
        [PYSWARM, "secret", "create", "dbpw", "-"], input=value, env={**os.environ, **swarm.env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert value not in created.stdout + created.stderr
    swarm.cli(
        "service", "create", "--name", "app", "--secret", "dbpw", "--secret", "source=dbpw,target=copy,mode=0400",
        BUSYBOX, "sh", "-c", "cat /run/secrets/dbpw; echo; ls -l /run/secrets/copy; sleep 1d",
    )  # fmt: skip
    wait_until(lambda: value in logs(swarm, "app"), what="the secret in the task's output")
    assert "-r--------" in logs(swarm, "app")
    node, name = one_container(swarm, "app")
    for shown in (
        swarm.cli("service", "inspect", "app").stdout,
        swarm.cli("secret", "inspect", "dbpw").stdout,
        swarm.cli("secret", "ls").stdout,
        docker(swarm, node, "inspect", name),
    ):
        assert value not in shown
    mount = swarm.lab.exec(node, ["findmnt", "-n", "-o", "FSTYPE", "/run/pyswarm-secrets"]).stdout.strip()
    assert mount == "tmpfs"  # on the node, only in memory
    refused = swarm.cli("secret", "rm", "dbpw", check=False)
    assert refused.returncode != 0 and "secret 'dbpw' is in use by the following service: app" in refused.stderr


def test_a_config_lands_at_its_target(swarm: Swarm) -> None:
    subprocess.run(
        [PYSWARM, "config", "create", "site", "-"], input="hello config\n",
        env={**os.environ, **swarm.env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    swarm.cli("service", "create", "--name", "cfg", "--config", "source=site,target=/etc/site.conf",
              BUSYBOX, "sh", "-c", "cat /etc/site.conf; sleep 1d")  # fmt: skip
    wait_until(lambda: "hello config" in logs(swarm, "cfg"), what="the config in the task's output")


def test_container_settings_reach_the_container(swarm: Swarm, tmp_path_factory: pytest.TempPathFactory) -> None:
    env_file = tmp_path_factory.mktemp("env") / "app.env"
    env_file.write_text("# settings\nFROM_FILE=yes\n")
    swarm.cli(
        "service", "create", "--name", "tuned", "--user", "65534", "--workdir", "/tmp", "--env-file", str(env_file),
        "--hostname", "{{.Service.Name}}-{{.Task.Slot}}", "--read-only", "--cap-drop", "ALL", "--init",
        "--stop-signal", "SIGINT", "--ulimit", "nofile=512:1024", "--sysctl", "net.ipv4.ip_forward=0",
        "--mount", "type=tmpfs,target=/scratch", "--log-driver", "json-file", "--log-opt", "max-size=1m",
        "--entrypoint", "sh -c", BUSYBOX, "echo id=$(id -u) pwd=$(pwd) host=$(hostname) env=$FROM_FILE; sleep 1d",
    )  # fmt: skip
    wait_until(lambda: "id=" in logs(swarm, "tuned"), what="the task's output")
    assert "id=65534 pwd=/tmp host=tuned-1 env=yes" in logs(swarm, "tuned")
    node, name = one_container(swarm, "tuned")
    inspected = json.loads(docker(swarm, node, "inspect", name))[0]
    host, config = inspected["HostConfig"], inspected["Config"]
    assert (host["ReadonlyRootfs"], host["CapDrop"], host["Init"]) == (True, ["ALL"], True)
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 512, "Hard": 1024}]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    assert config["StopSignal"] == "SIGINT" and config["Entrypoint"] == ["sh", "-c"]
    assert [m["Type"] for m in inspected["Mounts"]] == ["tmpfs"]


def test_a_crashed_tasks_last_output_is_in_service_logs(swarm: Swarm) -> None:
    swarm.cli(
        "service", "create", "-d", "--name", "crash", "--restart-condition", "on-failure", "--restart-delay", "1s",
        "--restart-max-attempts", "1", BUSYBOX, "sh", "-c", "echo last words of $HOSTNAME; exit 3",
    )  # fmt: skip
    wait_until(lambda: logs(swarm, "crash").count("last words") == 2, timeout=60, what="both attempts' output")
    lines = logs(swarm, "crash").splitlines()
    assert all(line.startswith("crash.1.") and "@node-0" in line for line in lines), lines
    assert all("crash.1@" in line for line in logs(swarm, "crash", "--no-task-ids").splitlines())
    stamped = logs(swarm, "crash", "--timestamps", "--tail", "1").splitlines()
    assert len(stamped) == 2 and all("Z last words" in line for line in stamped), stamped


def test_a_job_of_3_ends_with_3_complete(swarm: Swarm) -> None:
    created = swarm.cli("service", "create", "--name", "once", "--mode", "replicated-job", "--replicas", "3",
                        "--max-concurrent", "2", BUSYBOX, "sh", "-c", "sleep 1; echo done")  # fmt: skip
    assert "job complete" in created.stdout
    states = [t["state"] for t in swarm.json("service", "ps", "once")]
    assert states == ["complete"] * 3, states
    listing = swarm.cli("service", "ls").stdout
    assert "replicated job" in listing and "0/2 (3/3 completed)" in listing, listing


def test_an_image_on_node_01_only_runs_on_all_three_nodes(swarm: Swarm) -> None:
    docker(swarm, "node-01", "run", "--name", "maker", BUSYBOX, "sh", "-c", "echo made-on-node-01 > /marker")
    docker(swarm, "node-01", "commit", "maker", "only:1")
    docker(swarm, "node-01", "rm", "maker")
    try:
        created = swarm.cli("service", "create", "--name", "everywhere", "--mode", "global", "only:1",
                            "sh", "-c", "cat /marker; sleep 1d")  # fmt: skip
        # No registry: the tag stays, with docker's warning, and the nodes get the image from node-01.
        assert "could not be accessed on a registry to record" in created.stderr
        assert sorted(t["node"] for t in swarm.running_tasks("everywhere")) == ["node-01", "node-02", "node-03"]
        wait_until(lambda: logs(swarm, "everywhere").count("made-on-node-01") == 3, what="output from 3 nodes")
    finally:
        swarm.cli("service", "rm", "everywhere", check=False)
        wait_until(lambda: not any(swarm.all_containers().values()), what="containers removed")
        for node in ("node-01", "node-02", "node-03"):
            swarm.lab.exec(node, ["docker", "rmi", "only:1"], check=False)


def test_image_push_ships_a_local_image_to_every_node(swarm: Swarm) -> None:
    docker(swarm, "node-01", "tag", BUSYBOX, "pushed:1")
    env = {**os.environ, **swarm.env, "DOCKER_HOST": swarm.lab.node("node-01").docker_host}
    try:
        pushed = subprocess.run([PYSWARM, "image", "push", "pushed:1"], env=env, capture_output=True, text=True)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        for node in ("node-02", "node-03"):
            assert "pushed:1" in docker(swarm, node, "images", "--format", "{{.Repository}}:{{.Tag}}")
    finally:
        for node in ("node-01", "node-02", "node-03"):
            swarm.lab.exec(node, ["docker", "rmi", "pushed:1"], check=False)
