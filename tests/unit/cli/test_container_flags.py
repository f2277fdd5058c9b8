"""`service create/update`'s container flags, merged into the API's spec JSON by one pure function."""

from __future__ import annotations

from typing import Any

import pytest

from pyswarm.cli.container_flags import ContainerFlags, updated_container_settings
from pyswarm.model import ServiceSpec
from pyswarm.model.codec import spec_from_dict, spec_to_dict
from pyswarm.model.parse import SpecError


def current(**fields: Any) -> dict[str, Any]:
    return spec_to_dict(ServiceSpec(name="web", image="nginx", **fields))


def test_create_flags_land_in_the_spec() -> None:
    flags = ContainerFlags(
        entrypoint="/bin/sh -c 'echo hi'",
        workdir="/srv",
        user="1000:1000",
        hostname="{{.Service.Name}}-{{.Task.Slot}}",
        init=True,
        read_only=True,
        cap_add=("net_admin",),
        cap_drop=("ALL",),
        log_driver="json-file",
        log_opt=("max-size=1m",),
        stop_signal="quit",
        limit_memory="256m",
        reserve_cpu="0.25",
        health_cmd="wget -q -O- localhost",
        health_interval="2s",
        mount_add=("type=volume,source=data,target=/data",),
        dns_add=("10.0.0.2",),
        sysctl_add=("net.core.somaxconn=512",),
        ulimit_add=("nofile=100:200",),
        env_file_lines=("A=1", "C=3"),
    )
    spec = spec_from_dict(updated_container_settings(current(env=("A=0", "B=2")), flags))
    assert spec.entrypoint == ("/bin/sh", "-c", "echo hi")
    assert (spec.workdir, spec.user, spec.init, spec.read_only) == ("/srv", "1000:1000", True, True)
    assert spec.cap_add == ("CAP_NET_ADMIN",) and spec.cap_drop == ("ALL",)
    assert spec.log_driver == "json-file" and spec.log_opts == {"max-size": "1m"}
    assert spec.stop_signal == "SIGQUIT"
    assert spec.resources.limit_memory == 256 << 20 and spec.resources.reserve_nano_cpus == 250_000_000
    assert spec.healthcheck is not None and spec.healthcheck.test == ("CMD-SHELL", "wget -q -O- localhost")
    assert [m.target for m in spec.mounts] == ["/data"]
    assert spec.dns == ("10.0.0.2",) and spec.sysctls == {"net.core.somaxconn": "512"}
    assert spec.env == ("C=3", "A=0", "B=2")  # docker reads env files first: a variable given with --env wins


def test_update_removes_then_adds_and_keeps_the_rest() -> None:
    before = updated_container_settings(
        current(),
        ContainerFlags(
            mount_add=("type=volume,source=a,target=/a", "type=tmpfs,target=/t"),
            limit_memory="1g",
            health_cmd="true",
        ),
    )
    after = updated_container_settings(
        before,
        ContainerFlags(mount_rm=("/t",), mount_add=("type=volume,source=b,target=/a",), reserve_memory="64m"),
    )
    spec = spec_from_dict(after)
    assert [(m.source, m.target) for m in spec.mounts] == [("b", "/a")]
    assert spec.resources.limit_memory == 1 << 30 and spec.resources.reserve_memory == 64 << 20
    assert spec.healthcheck is not None and spec.healthcheck.test == ("CMD-SHELL", "true")
    disabled = spec_from_dict(updated_container_settings(after, ContainerFlags(no_healthcheck=True)))
    assert disabled.healthcheck is not None and disabled.healthcheck.disabled


def test_no_flags_change_nothing_and_old_specs_gain_defaults() -> None:
    spec = current(workdir="/x")
    assert updated_container_settings(spec, ContainerFlags()) == spec
    old = {k: v for k, v in spec.items() if k in ("name", "image", "env", "labels")}
    assert spec_from_dict({**updated_container_settings(old, ContainerFlags()), "name": "web", "image": "nginx"})


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (ContainerFlags(mount_add=("type=bind,target=/x",)), "needs a source"),
        (ContainerFlags(limit_memory="lots"), "--limit-memory"),
        (ContainerFlags(health_cmd="true", no_healthcheck=True), "conflicts"),
        (ContainerFlags(entrypoint="'unclosed"), "--entrypoint"),
        (ContainerFlags(log_opt=("max-size=1m",)), "--log-opt needs --log-driver"),
        (ContainerFlags(max_concurrent="two"), "--max-concurrent"),
        (ContainerFlags(mount_add=("target=/a", "type=tmpfs,target=/a")), None),  # the later replaces the first
    ],
)
def test_bad_values_are_refused_with_reason(flags: ContainerFlags, message: str | None) -> None:
    spec = current()
    if message is None:
        assert len(updated_container_settings(spec, flags)["mounts"]) == 1
        return
    with pytest.raises(SpecError, match=message):
        updated_container_settings(spec, flags)
    assert spec == current()  # the caller's dict is left as it was


def test_one_secret_at_two_targets_and_rm_by_name() -> None:
    spec = updated_container_settings(
        current(), ContainerFlags(secret_add=("dbpw", "source=dbpw,target=copy,mode=0400"), config_add=("site",))
    )
    assert [(r["name"], r["target"], r["mode"]) for r in spec["secrets"]] == [
        ("dbpw", "dbpw", 0o444),
        ("dbpw", "copy", 0o400),
    ]
    replaced = updated_container_settings(spec, ContainerFlags(secret_add=("source=other,target=copy",)))
    assert [(r["name"], r["target"]) for r in replaced["secrets"]] == [("dbpw", "dbpw"), ("other", "copy")]
    removed = updated_container_settings(spec, ContainerFlags(secret_rm=("dbpw",), config_rm=("site",)))
    assert removed["secrets"] == [] and removed["configs"] == []
