"""A task's ContainerSpec as the engine API's create request: what docker-py would send."""

from __future__ import annotations

import docker

from pyswarm.drivers.container_config import create_arguments
from pyswarm.model import (
    ContainerOptions,
    ContainerSpec,
    FileMount,
    HealthCheck,
    Mount,
    MountType,
    PortBinding,
    Protocol,
    Resources,
    Ulimit,
)


def api() -> docker.APIClient:
    return docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")  # never connects


def spec(options: ContainerOptions, **fields: object) -> ContainerSpec:
    return ContainerSpec(
        "web.1.x", "nginx", (), ("A=1",), {"l": "v"}, (PortBinding(80, Protocol.TCP),), options=options, **fields
    )  # type: ignore[arg-type]


def test_plain_spec_sends_only_what_it_had() -> None:
    args = create_arguments(api(), spec(ContainerOptions()))
    assert set(args) == {
        "image", "command", "name", "environment", "labels", "ports", "host_config", "stop_timeout", "detach",
    }  # fmt: skip
    host = args["host_config"]
    assert host["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": ""}]}
    assert host["RestartPolicy"] == {"Name": "no"}
    assert "Memory" not in host and "Init" not in host


def test_every_option_reaches_the_request() -> None:
    options = ContainerOptions(
        entrypoint=("/bin/sh", "-c"),
        workdir="/srv",
        user="nobody",
        init=True,
        read_only=True,
        cap_add=("CAP_NET_ADMIN",),
        cap_drop=("ALL",),
        sysctls={"net.core.somaxconn": "512"},
        ulimits=(Ulimit("nofile", 10, 20),),
        dns=("10.0.0.2",),
        dns_search=("lab",),
        dns_options=("ndots:2",),
        log_driver="json-file",
        log_opts={"max-size": "1m"},
        stop_signal="SIGQUIT",
        mounts=(
            Mount(MountType.VOLUME, "/data", "data", readonly=True),
            Mount(MountType.BIND, "/host", "/srv/host"),
            Mount(MountType.TMPFS, "/tmp", tmpfs_size=1 << 20),
        ),
        resources=Resources(limit_nano_cpus=500_000_000, limit_memory=64 << 20, limit_pids=50, reserve_memory=1),
        healthcheck=HealthCheck(("CMD-SHELL", "true"), interval=2.0, timeout=1.0, retries=3, start_period=0.5),
    )
    args = create_arguments(
        api(), spec(options, hostname="web-1", files=(FileMount("/run/pyswarm-secrets/t/0", "/run/secrets/pw"),))
    )
    assert args["entrypoint"] == ["/bin/sh", "-c"]
    assert (args["working_dir"], args["user"], args["hostname"], args["stop_signal"]) == (
        "/srv", "nobody", "web-1", "SIGQUIT",
    )  # fmt: skip
    assert args["healthcheck"] == {
        "test": ["CMD-SHELL", "true"], "interval": 2 * 10**9, "timeout": 10**9, "retries": 3, "start_period": 5 * 10**8,
    }  # fmt: skip
    host = args["host_config"]
    assert (host["Init"], host["ReadonlyRootfs"], host["NanoCpus"], host["Memory"], host["PidsLimit"]) == (
        True, True, 500_000_000, 64 << 20, 50,
    )  # fmt: skip
    assert host["CapAdd"] == ["CAP_NET_ADMIN"] and host["CapDrop"] == ["ALL"]
    assert host["Sysctls"] == {"net.core.somaxconn": "512"}
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 10, "Hard": 20}]
    assert (host["Dns"], host["DnsSearch"], host["DnsOptions"]) == (["10.0.0.2"], ["lab"], ["ndots:2"])
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m"}}
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert mounts["/data"]["Type"] == "volume" and mounts["/data"]["Source"] == "data" and mounts["/data"]["ReadOnly"]
    assert mounts["/host"]["Type"] == "bind" and mounts["/host"]["Source"] == "/srv/host"
    assert mounts["/tmp"]["TmpfsOptions"] == {"SizeBytes": 1 << 20}
    assert mounts["/run/secrets/pw"] == {
        "Target": "/run/secrets/pw", "Source": "/run/pyswarm-secrets/t/0", "Type": "bind", "ReadOnly": True,
    }  # fmt: skip


def test_empty_entrypoint_clears_the_images() -> None:
    assert create_arguments(api(), spec(ContainerOptions(entrypoint=())))["entrypoint"] == [""]
