"""`service inspect --pretty`: a service as docker prints it, container settings included."""

from __future__ import annotations

from typing import Any

from pyswarm.cli.text import printable

_MODES = {"replicated": "Replicated", "global": "Global", "replicated-job": "ReplicatedJob", "global-job": "GlobalJob"}


def _text(value: str) -> str:
    return printable(value, one_line=True)


def _cpus(nano: int) -> str:
    return f"{nano / 1e9:g}"


def _memory(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size}B"


def pretty_service(item: dict[str, Any]) -> str:
    spec = item["spec"]
    lines = [
        f"ID:\t\t{item['id']}",
        f"Name:\t\t{_text(spec['name'])}",
        f"Version:\t{item['version']}",
        f"Labels:\t\t{spec['labels']}",
        f"Service Mode:\t{_MODES.get(spec['mode'], spec['mode'])}",
    ]
    if spec["mode"] in ("replicated", "replicated-job"):
        lines.append(f" Replicas:\t{spec['replicas']}")
    if spec["mode"] == "replicated-job" and spec.get("max_concurrent"):
        lines.append(f" Max Concurrent:\t{spec['max_concurrent']}")
    lines += [
        "Placement:",
        f" Constraints:\t{spec['constraints']}",
        f" Preferences:\t{spec['placement_prefs']}",
        f" Max Replicas Per Node:\t{spec['max_replicas_per_node']}",
        "RestartPolicy:",
        f" Condition:\t{spec['restart_policy']['condition']}",
        f" Delay:\t\t{spec['restart_policy']['delay']:g}s",
        f" Max attempts:\t{spec['restart_policy']['max_attempts']}",
        "ContainerSpec:",
        f" Image:\t\t{_text(spec['image'])}",
        f" Args:\t\t{_text(' '.join(spec['command']))}",
        f" Env:\t\t{_text(' '.join(spec['env']))}",
        *_container_lines(spec),
        f"StopGracePeriod:\t{spec['stop_grace_period']:g}s",
        *_resource_lines(spec.get("resources") or {}),
        "Endpoint Mode:\tvip (iptables mesh)",
        "Ports:",
    ]
    for port in spec["ports"]:
        lines.append(
            f" PublishedPort = {port['published']}\n  Protocol = {port['protocol']}\n"
            f"  TargetPort = {port['target']}\n  PublishMode = {port['mode']}"
        )
    return "\n".join(lines) + "\n"


def _container_lines(spec: dict[str, Any]) -> list[str]:
    lines = []
    if spec.get("entrypoint") is not None:
        lines.append(f" Entrypoint:\t{_text(' '.join(spec['entrypoint']))}")
    for key, label in (("workdir", "Dir"), ("user", "User"), ("hostname", "Hostname"), ("stop_signal", "StopSignal")):
        if spec.get(key):
            lines.append(f" {label}:\t\t{_text(spec[key])}")
    if spec.get("init"):
        lines.append(" Init:\t\ttrue")
    if spec.get("read_only"):
        lines.append(" Read Only:\ttrue")
    for key, label in (("cap_add", "Capability Add"), ("cap_drop", "Capability Drop"), ("dns", "DNS")):
        if spec.get(key):
            lines.append(f" {label}:\t{', '.join(spec[key])}")
    health = spec.get("healthcheck")
    if health is not None:
        test = " ".join(health["test"]) or "(the image's)"
        lines.append(f" Healthcheck:\t{_text(test)}")
        for key in ("interval", "timeout", "start_period"):
            if health[key]:
                lines.append(f"  {key.replace('_', ' ').title()}:\t{health[key]:g}s")
        if health["retries"]:
            lines.append(f"  Retries:\t{health['retries']}")
    mounts = spec.get("mounts") or []
    if mounts:
        lines.append("Mounts:")
        for m in mounts:
            lines.append(f" Target:\t{_text(m['target'])}")
            lines.append(f"  Source:\t{_text(m['source'])}\n  ReadOnly:\t{str(m['readonly']).lower()}")
            lines.append(f"  Type:\t\t{m['type']}")
    for kind in ("secrets", "configs"):
        refs = spec.get(kind) or []
        if refs:
            lines.append(f"{kind.title()}:")
            lines += [f" Target:\t{_text(r['target'])}\n  Source:\t{_text(r['name'])}" for r in refs]
    if spec.get("log_driver"):
        lines.append(f"Log Driver:\n Name:\t\t{spec['log_driver']}")
        lines += [f" {_text(k)}:\t{_text(v)}" for k, v in spec.get("log_opts", {}).items()]
    return lines


def _resource_lines(res: dict[str, int]) -> list[str]:
    def pairs(prefix: str) -> list[tuple[str, str]]:
        cpus, memory = res.get(f"{prefix}_nano_cpus", 0), res.get(f"{prefix}_memory", 0)
        return [("CPU", _cpus(cpus))] * bool(cpus) + [("Memory", _memory(memory))] * bool(memory)

    limits, reserved = pairs("limit"), pairs("reserve")
    if res.get("limit_pids"):
        limits.append(("PIDs", str(res["limit_pids"])))
    if not limits and not reserved:
        return []
    lines = ["Resources:"]
    if reserved:
        lines += [" Reservations:"] + [f"  {name}:\t{value}" for name, value in reserved]
    if limits:
        lines += [" Limits:"] + [f"  {name}:\t{value}" for name, value in limits]
    return lines
