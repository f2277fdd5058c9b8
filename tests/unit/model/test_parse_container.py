"""Container settings' parsers: docker's syntax in, model values out, a clear SpecError for anything else."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyswarm.model import HealthCheck, Mount, MountType, Resources, ServiceSpec, Ulimit
from pyswarm.model import parse_container as pc
from pyswarm.model.codec import spec_from_dict, spec_to_dict
from pyswarm.model.parse import SpecError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=volume,source=data,target=/data", Mount(MountType.VOLUME, "/data", "data")),
        ("src=data,dst=/data,ro", Mount(MountType.VOLUME, "/data", "data", readonly=True)),
        ("type=bind,source=/srv,target=/srv,readonly=false", Mount(MountType.BIND, "/srv", "/srv")),
        (
            "type=bind,source=/srv,target=/srv,bind-propagation=rslave",
            Mount(MountType.BIND, "/srv", "/srv", bind_propagation="rslave"),
        ),
        (
            "type=tmpfs,target=/tmp,tmpfs-size=64m,tmpfs-mode=1770",
            Mount(MountType.TMPFS, "/tmp", tmpfs_size=64 * 1024**2, tmpfs_mode=0o1770),
        ),
        (
            "target=/v,volume-label=a=b,volume-nocopy",
            Mount(MountType.VOLUME, "/v", volume_labels={"a": "b"}, volume_nocopy=True),
        ),
    ],
)
def test_mount_reads_docker_syntax(text: str, expected: Mount) -> None:
    assert pc.mount(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=volume,source=data", "target is required"),
        ("type=nfs,target=/x", "type is volume, bind or tmpfs"),
        ("type=bind,target=/x", "needs a source"),
        ("type=bind,source=relative,target=/x", "absolute path"),
        ("type=volume,source=data,target=relative", "absolute path"),
        ("type=volume,source=data,target=/", "root"),
        ("type=volume,source=../etc,target=/x", "invalid volume name"),
        ("type=tmpfs,source=x,target=/x", "takes no source"),
        ("type=volume,target=/x,tmpfs-size=1m", "tmpfs options are for type=tmpfs only"),
        ("type=bind,source=/a,target=/x,volume-nocopy", "volume options"),
        ("target=/x,readonly=maybe", "expected true or false"),
        ("target=/x,color=red", "unknown field 'color'"),
        ("type=bind,source=/a,target=/x,bind-propagation=weird", "bind-propagation"),
    ],
)
def test_mount_refuses_with_reason(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        pc.mount(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("512m", 512 * 1024**2), ("1g", 1024**3), ("1.5GiB", int(1.5 * 1024**3)), ("64MB", 64 << 20)],
)
def test_memory_bytes(text: str, value: int) -> None:
    assert pc.memory_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1m", "1x", "1 g b"])
def test_memory_bytes_refuses(text: str) -> None:
    with pytest.raises(SpecError):
        pc.memory_bytes(text)


def test_resources_merge_over_base_and_check_limits() -> None:
    base = Resources(limit_memory=512 << 20)
    res = pc.resources(limit_cpu="1.5", reserve_cpu="0.5", reserve_memory="128m", base=base)
    assert res == Resources(
        limit_nano_cpus=1_500_000_000, limit_memory=512 << 20, reserve_nano_cpus=500_000_000, reserve_memory=128 << 20
    )
    with pytest.raises(SpecError, match="smallest reservation is 4MiB"):
        pc.resources(reserve_memory="1m")
    with pytest.raises(SpecError, match=r"0\.001 CPUs"):
        pc.resources(reserve_cpu="0.0001")
    with pytest.raises(SpecError, match="more than --limit-memory"):
        pc.resources(limit_memory="64m", reserve_memory="128m")
    with pytest.raises(SpecError, match="invalid --limit-cpu"):
        pc.resources(limit_cpu="two")


def test_healthcheck_flags() -> None:
    check = pc.healthcheck(cmd="wget -q -O- localhost", interval="2s", retries="3")
    assert check == HealthCheck(test=("CMD-SHELL", "wget -q -O- localhost"), interval=2.0, retries=3)
    assert pc.healthcheck() is None  # the image's own
    assert pc.healthcheck(disabled=True) == HealthCheck(test=("NONE",))
    # Update: a flag changes only its own field.
    assert pc.healthcheck(timeout="1s", base=check) == dataclasses.replace(check, timeout=1.0)
    with pytest.raises(SpecError, match="--no-healthcheck conflicts"):
        pc.healthcheck(cmd="true", disabled=True)
    with pytest.raises(SpecError, match="--health-retries"):
        pc.healthcheck(retries="many")


def test_small_parsers() -> None:
    assert pc.ulimit("nofile=1024:2048") == Ulimit("nofile", 1024, 2048)
    assert pc.ulimit("nproc=64") == Ulimit("nproc", 64, 64)
    assert pc.capability("net_admin") == "CAP_NET_ADMIN"
    assert pc.capability("ALL") == "ALL"
    assert pc.stop_signal("term") == "SIGTERM"
    assert pc.stop_signal("9") == "9"
    assert pc.sysctl("net.core.somaxconn=1024") == ("net.core.somaxconn", "1024")
    for func, text in (
        (pc.ulimit, "nofile=2048:1024"),
        (pc.ulimit, "files=1"),
        (pc.capability, "net admin"),
        (pc.stop_signal, "SIGNOPE"),
        (pc.sysctl, "somaxconn"),
        (pc.user, "root; rm -rf /"),
        (pc.workdir, "relative/dir"),
        (pc.dns_server, "8.8.8"),
        (pc.hostname, "{{.Service.Nope}}"),
        (pc.hostname, "bad host"),
    ):
        with pytest.raises(SpecError):
            func(text)


def test_hostname_template_expands_per_task() -> None:
    template = pc.hostname("{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}")
    assert pc.expand_hostname(template, {"Service.Name": "web", "Task.Slot": "2", "Node.Hostname": "node-01"}) == (
        "web-2.node-01"
    )


def test_env_file_follows_docker_rules() -> None:
    text = "# comment\n\nA=1\nB = 2\nFROM_ENV\nUNSET\nC=x=y\n"
    with pytest.raises(SpecError, match="line 4"):
        pc.env_file(text, {})
    assert pc.env_file("A=1\nFROM_ENV\nUNSET\nC=x=y\n  # indented comment\n", {"FROM_ENV": "v"}) == [
        "A=1",
        "FROM_ENV=v",
        "C=x=y",
    ]


def test_check_container_settings_catches_what_the_api_is_given() -> None:
    spec = ServiceSpec(name="web", image="nginx", mounts=(Mount(MountType.VOLUME, "/a"), Mount(MountType.TMPFS, "/a")))
    with pytest.raises(SpecError, match="duplicate mount target"):
        pc.check_container_settings(spec)
    with pytest.raises(SpecError, match="--log-opt needs --log-driver"):
        pc.check_container_settings(ServiceSpec(name="web", image="nginx", log_opts={"max-size": "1m"}))


settings_strategy = st.fixed_dictionaries(
    {
        "entrypoint": st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3).map(tuple)),
        "workdir": st.sampled_from(["", "/srv"]),
        "init": st.sampled_from([None, True, False]),
        "read_only": st.booleans(),
        "cap_add": st.lists(st.sampled_from(["CAP_NET_ADMIN", "ALL"]), max_size=2).map(tuple),
        "sysctls": st.dictionaries(st.sampled_from(["net.core.somaxconn", "net.ipv4.ip_forward"]), st.just("1")),
        "ulimits": st.lists(st.builds(Ulimit, st.just("nofile"), st.just(1), st.just(2)), max_size=1).map(tuple),
        "mounts": st.lists(
            st.builds(Mount, st.sampled_from(list(MountType)), st.sampled_from(["/a", "/b"])), max_size=2
        ).map(tuple),
        "resources": st.builds(Resources, reserve_memory=st.integers(0, 2**40), limit_pids=st.integers(0, 100)),
        "healthcheck": st.one_of(
            st.none(), st.builds(HealthCheck, st.just(("CMD", "true")), st.floats(0, 60), retries=st.integers(0, 9))
        ),
    }
)


@given(settings_strategy)
def test_codec_round_trips_container_settings(fields: dict[str, object]) -> None:
    spec = ServiceSpec(name="web", image="nginx", **fields)  # type: ignore[arg-type]
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert spec_from_dict(spec_to_dict(spec, stored=True)) == spec
