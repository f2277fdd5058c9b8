"""`service inspect --pretty` shows the container settings a spec has, and nothing for those it lacks."""

from __future__ import annotations

from pyswarm.cli.service_pretty import pretty_service
from pyswarm.model import HealthCheck, Mount, MountType, Resources, ServiceMode, ServiceSpec
from pyswarm.model.codec import spec_to_dict


def shown(spec: ServiceSpec) -> str:
    return pretty_service({"id": "abc", "version": 2, "spec": spec_to_dict(spec)})


def test_plain_service_has_no_settings_sections() -> None:
    text = shown(ServiceSpec(name="web", image="nginx"))
    assert "Service Mode:\tReplicated\n Replicas:\t1" in text
    for section in ("Resources:", "Mounts:", "Healthcheck", "Secrets:", "Log Driver"):
        assert section not in text


def test_settings_are_shown_as_docker_names_them() -> None:
    text = shown(
        ServiceSpec(
            name="db",
            image="redis",
            mode=ServiceMode.REPLICATED_JOB,
            replicas=3,
            max_concurrent=2,
            workdir="/data",
            mounts=(Mount(MountType.VOLUME, "/data", "dbdata"),),
            resources=Resources(limit_memory=512 << 20, reserve_nano_cpus=250_000_000),
            healthcheck=HealthCheck(("CMD-SHELL", "redis-cli ping"), interval=2.0, retries=3),
        )
    )
    assert "Service Mode:\tReplicatedJob\n Replicas:\t3\n Max Concurrent:\t2" in text
    assert " Dir:\t\t/data" in text
    assert "Mounts:\n Target:\t/data\n  Source:\tdbdata\n  ReadOnly:\tfalse\n  Type:\t\tvolume" in text
    assert " Healthcheck:\tCMD-SHELL redis-cli ping\n  Interval:\t2s\n  Retries:\t3" in text
    assert "Resources:\n Reservations:\n  CPU:\t0.25\n Limits:\n  Memory:\t512MiB" in text
