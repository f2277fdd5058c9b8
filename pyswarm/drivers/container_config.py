"""A task's ContainerSpec as the Docker Engine API's container-create request (docker SDK arguments)."""

from __future__ import annotations

from typing import Any

import docker
import docker.types

from pyswarm.model import ContainerSpec, HealthCheck, Mount, MountType

_NS = 1_000_000_000  # the engine counts health-check durations in nanoseconds


def create_arguments(api: docker.APIClient, spec: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments for APIClient.create_container."""
    opts = spec.options
    res = opts.resources
    bindings = {f"{p.target}/{p.protocol.value}": (None if p.host_port == 0 else p.host_port) for p in spec.ports}
    host: dict[str, Any] = {
        "port_bindings": bindings,
        "restart_policy": {"Name": "no"},
        "mounts": [_mount(m) for m in opts.mounts]
        + [docker.types.Mount(f.target, f.host_path, type="bind", read_only=True) for f in spec.files],
        "cap_add": list(opts.cap_add) or None,
        "cap_drop": list(opts.cap_drop) or None,
        "sysctls": dict(opts.sysctls) or None,
        "ulimits": [docker.types.Ulimit(name=u.name, soft=u.soft, hard=u.hard) for u in opts.ulimits] or None,
        "dns": list(opts.dns) or None,
        "dns_search": list(opts.dns_search) or None,
        "dns_opt": list(opts.dns_options) or None,
        "init": opts.init,
        "read_only": opts.read_only or None,
        "nano_cpus": res.limit_nano_cpus or None,
        "mem_limit": res.limit_memory or None,
        "pids_limit": res.limit_pids or None,
    }
    if opts.log_driver:
        host["log_config"] = docker.types.LogConfig(type=opts.log_driver, config=dict(opts.log_opts))
    arguments: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command) or None,
        "name": spec.name,
        "environment": list(spec.env),
        "labels": spec.labels,
        "ports": [(p.target, p.protocol.value) for p in spec.ports],
        "host_config": api.create_host_config(**{k: v for k, v in host.items() if v is not None}),
        "stop_timeout": spec.stop_timeout,
        "detach": True,
    }
    if opts.entrypoint is not None:
        # An empty list clears the image's entrypoint, as `--entrypoint ""` does.
        arguments["entrypoint"] = list(opts.entrypoint) or [""]
    if opts.workdir:
        arguments["working_dir"] = opts.workdir
    if opts.user:
        arguments["user"] = opts.user
    if spec.hostname:
        arguments["hostname"] = spec.hostname
    if opts.stop_signal:
        arguments["stop_signal"] = opts.stop_signal
    if opts.healthcheck is not None:
        arguments["healthcheck"] = _healthcheck(opts.healthcheck)
    return arguments


def _mount(m: Mount) -> docker.types.Mount:
    if m.type is MountType.TMPFS:
        return docker.types.Mount(
            m.target,
            None,
            type="tmpfs",
            read_only=m.readonly,
            tmpfs_size=m.tmpfs_size or None,
            tmpfs_mode=m.tmpfs_mode or None,
        )
    if m.type is MountType.BIND:
        return docker.types.Mount(
            m.target, m.source, type="bind", read_only=m.readonly, propagation=m.bind_propagation or None
        )
    # A named volume is created on the node by the engine when it does not exist; no source: an anonymous one.
    return docker.types.Mount(
        m.target,
        m.source or None,
        type="volume",
        read_only=m.readonly,
        no_copy=m.volume_nocopy,
        labels=dict(m.volume_labels) or None,
        driver_config=docker.types.DriverConfig(m.volume_driver) if m.volume_driver else None,
    )


def _healthcheck(check: HealthCheck) -> dict[str, Any]:
    result: dict[str, Any] = {"test": list(check.test) if check.test else []}
    for name in ("interval", "timeout", "start_period"):
        value = getattr(check, name)
        if value:
            result[name] = int(value * _NS)
    if check.retries:
        result["retries"] = check.retries
    return result
