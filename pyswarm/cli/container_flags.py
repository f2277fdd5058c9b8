"""The container-setting flags of `service create` and `service update` (`--mount`, `--limit-memory`,
`--health-cmd`, `--secret`, ...), applied to a spec in the API's JSON form. Pure: no I/O; `--env-file` is
read by the command and given here as text.

`create` starts from the defaults, `update` from the current spec: the same function merges both, so a flag
means the same thing in either. Removals go before additions (`--mount-rm`, then `--mount-add`), as docker
does. Every error is a `parse.SpecError` fit to show the user.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import click

from pyswarm.model import ServiceSpec, parse
from pyswarm.model import parse_container as pc
from pyswarm.model.codec import (
    container_settings_from_dict,
    container_settings_to_dict,
    mount_to_dict,
    resources_to_dict,
)


@dataclass(frozen=True)
class ContainerFlags:
    """Field names are the click parameter names; the defaults change nothing."""

    entrypoint: str | None = None
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    init: bool | None = None
    read_only: bool | None = None
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    log_driver: str | None = None
    log_opt: tuple[str, ...] = ()
    stop_signal: str | None = None
    limit_cpu: str | None = None
    limit_memory: str | None = None
    limit_pids: str | None = None
    reserve_cpu: str | None = None
    reserve_memory: str | None = None
    health_cmd: str | None = None
    health_interval: str | None = None
    health_timeout: str | None = None
    health_retries: str | None = None
    health_start_period: str | None = None
    no_healthcheck: bool = False
    max_concurrent: str | None = None
    # create's names; update takes the -add forms (same fields) and the -rm ones.
    mount_add: tuple[str, ...] = ()
    mount_rm: tuple[str, ...] = ()  # targets
    secret_add: tuple[str, ...] = ()
    secret_rm: tuple[str, ...] = ()  # names
    config_add: tuple[str, ...] = ()
    config_rm: tuple[str, ...] = ()
    dns_add: tuple[str, ...] = ()
    dns_rm: tuple[str, ...] = ()
    dns_search_add: tuple[str, ...] = ()
    dns_search_rm: tuple[str, ...] = ()
    dns_option_add: tuple[str, ...] = ()
    dns_option_rm: tuple[str, ...] = ()
    sysctl_add: tuple[str, ...] = ()
    sysctl_rm: tuple[str, ...] = ()  # keys
    ulimit_add: tuple[str, ...] = ()
    ulimit_rm: tuple[str, ...] = ()  # names
    env_file_lines: tuple[str, ...] = ()  # NAME=VALUE from --env-file, read by the command

    @classmethod
    def take(cls, flags: dict[str, Any]) -> ContainerFlags:
        """Pop this class's fields out of a click command's keyword arguments."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: flags.pop(name) for name in list(flags) if name in names})


def _opt(*names: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.option(*names, **kwargs)


# Flags that create and update share, with docker's names and help.
SHARED_OPTIONS = [
    _opt("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image."),
    _opt("-w", "--workdir", default=None, help="Working directory inside the container."),
    _opt("-u", "--user", default=None, help="Username or UID (format: <name|uid>[:<group|gid>])."),
    _opt("--hostname", default=None, help="Container hostname (templates: {{.Service.Name}}, {{.Task.Slot}}, ...)."),
    # The --no- forms turn them off again on update (docker spells that --read-only=false).
    _opt("--init/--no-init", default=None, help="Use an init inside each service container."),
    _opt("--read-only/--no-read-only", default=None, help="Mount the container's root filesystem as read only."),
    _opt("--cap-add", multiple=True, help="Add Linux capabilities."),
    _opt("--cap-drop", multiple=True, help="Drop Linux capabilities."),
    _opt("--log-driver", default=None, help="Logging driver for service."),
    _opt("--log-opt", multiple=True, help="Logging driver options."),
    _opt("--stop-signal", default=None, help="Signal to stop the container."),
    _opt("--limit-cpu", default=None, help="Limit CPUs."),
    _opt("--limit-memory", default=None, help="Limit Memory."),
    _opt("--limit-pids", default=None, help="Limit maximum number of processes (default 0 = unlimited)."),
    _opt("--reserve-cpu", default=None, help="Reserve CPUs."),
    _opt("--reserve-memory", default=None, help="Reserve Memory."),
    _opt("--health-cmd", default=None, help="Command to run to check health."),
    _opt("--health-interval", default=None, help="Time between running the check (ms|s|m|h)."),
    _opt("--health-timeout", default=None, help="Maximum time to allow one check to run (ms|s|m|h)."),
    _opt("--health-retries", default=None, help="Consecutive failures needed to report unhealthy."),
    _opt("--health-start-period", default=None, help="Start period for the container to initialize (ms|s|m|h)."),
    _opt("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK."),
    _opt(
        "--max-concurrent", default=None, help="Number of job tasks to run concurrently (default equal to --replicas)."
    ),
]

CREATE_OPTIONS = [
    _opt("--mount", "mount_add", multiple=True, help="Attach a filesystem mount to the service."),
    _opt("--secret", "secret_add", multiple=True, help="Specify secrets to expose to the service."),
    _opt("--config", "config_add", multiple=True, help="Specify configurations to expose to the service."),
    _opt("--dns", "dns_add", multiple=True, help="Set custom DNS servers."),
    _opt("--dns-search", "dns_search_add", multiple=True, help="Set custom DNS search domains."),
    _opt("--dns-option", "dns_option_add", multiple=True, help="Set DNS options."),
    _opt("--sysctl", "sysctl_add", multiple=True, help="Sysctl options."),
    _opt("--ulimit", "ulimit_add", multiple=True, help="Ulimit options."),
    _opt(
        "--env-file",
        "env_file",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="Read in a file of environment variables.",
    ),
]

UPDATE_OPTIONS = [
    _opt(f"--{name}-{verb}", multiple=True, help=f"{verb.capitalize()} {what}.")
    for name, what in (
        ("mount", "a mount (rm: by its target path)"),
        ("secret", "a secret (rm: by its name)"),
        ("config", "a config (rm: by its name)"),
        ("dns", "a custom DNS server"),
        ("dns-search", "a DNS search domain"),
        ("dns-option", "a DNS option"),
        ("sysctl", "a sysctl option (rm: by its key)"),
        ("ulimit", "a ulimit option (rm: by its name)"),
    )
    for verb in ("add", "rm")
]


def updated_container_settings(spec: dict[str, Any], flags: ContainerFlags) -> dict[str, Any]:
    """`spec` (the API's JSON) with the flags applied, as a new dict; the settings are checked as a whole."""
    new = copy.deepcopy(spec)
    new.update(_with_defaults(new))
    _scalars(new, flags)
    _lists(new, flags)
    res = container_settings_from_dict(new)["resources"]
    new["resources"] = resources_to_dict(
        pc.resources(
            flags.limit_cpu, flags.limit_memory, flags.limit_pids, flags.reserve_cpu, flags.reserve_memory, res
        )
    )
    health = pc.healthcheck(
        flags.health_cmd,
        flags.health_interval,
        flags.health_timeout,
        flags.health_retries,
        flags.health_start_period,
        flags.no_healthcheck,
        container_settings_from_dict(new)["healthcheck"],
    )
    new["healthcheck"] = container_settings_to_dict(_spec_with(new, healthcheck=health))["healthcheck"]
    if flags.env_file_lines:
        # docker reads the files first: a variable given with --env wins over the file's.
        given = {e.split("=", 1)[0] for e in new.get("env", [])}
        from_files: dict[str, str] = {}
        for line in flags.env_file_lines:
            from_files[line.split("=", 1)[0]] = parse.env(line)
        new["env"] = [line for key, line in from_files.items() if key not in given] + list(new.get("env", []))
    pc.check_container_settings(_spec_with(new))
    return new


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Every container-setting key, with its default where `data` (a spec from an older manager) lacks it."""
    return container_settings_to_dict(ServiceSpec(name="x", image="x", **container_settings_from_dict(data)))


def _spec_with(data: dict[str, Any], **changes: Any) -> ServiceSpec:
    """A spec holding `data`'s container settings (with `changes`), to check them as a whole."""
    settings = container_settings_from_dict(data)
    settings.update(changes)
    return ServiceSpec(name="x", image="x", **settings)


def _scalars(new: dict[str, Any], flags: ContainerFlags) -> None:
    if flags.entrypoint is not None:
        try:
            new["entrypoint"] = shlex.split(flags.entrypoint)
        except ValueError as exc:
            raise parse.SpecError(f"invalid --entrypoint {flags.entrypoint[:80]!r}: {exc}") from None
    for name, check in (
        ("workdir", pc.workdir),
        ("user", pc.user),
        ("hostname", pc.hostname),
        ("stop_signal", pc.stop_signal),
        ("log_driver", pc.log_driver),
    ):
        value = getattr(flags, name)
        if value is not None:
            new[name] = check(value) if value else ""
    for name in ("init", "read_only"):
        if getattr(flags, name) is not None:
            new[name] = getattr(flags, name)
    if flags.log_opt:
        new["log_opts"] = {**new["log_opts"], **dict(pc.option(o, "--log-opt") for o in flags.log_opt)}
    if flags.max_concurrent is not None:
        if not flags.max_concurrent.isdigit():
            raise parse.SpecError(f"invalid --max-concurrent {flags.max_concurrent!r}: must be a whole number")
        new["max_concurrent"] = int(flags.max_concurrent)


def _merged(
    current: Iterable[Any], removed: Iterable[Any], added: Iterable[Any], key: Callable[[Any], Any]
) -> list[Any]:
    """Removals by key first; an addition replaces the item with its key and goes last."""
    gone = set(removed)
    result = [item for item in current if key(item) not in gone]
    for item in added:
        result = [x for x in result if key(x) != key(item)] + [item]
    return result


def _lists(new: dict[str, Any], flags: ContainerFlags) -> None:
    new["cap_add"] = _merged(new["cap_add"], (), map(pc.capability, flags.cap_add), str)
    new["cap_drop"] = _merged(new["cap_drop"], (), map(pc.capability, flags.cap_drop), str)
    new["mounts"] = _merged(
        new["mounts"], flags.mount_rm, (mount_to_dict(pc.mount(m)) for m in flags.mount_add), lambda m: m["target"]
    )
    # One secret may be given at several targets: an added reference replaces the one at its target;
    # --secret-rm NAME removes every reference to NAME.
    for kind in ("secret", "config"):
        current = [r for r in new[f"{kind}s"] if r["name"] not in getattr(flags, f"{kind}_rm")]
        new[f"{kind}s"] = _merged(current, (), _references(getattr(flags, f"{kind}_add"), kind), _target)
    new["dns"] = _merged(new["dns"], flags.dns_rm, map(pc.dns_server, flags.dns_add), str)
    new["dns_search"] = _merged(new["dns_search"], flags.dns_search_rm, map(pc.dns_search, flags.dns_search_add), str)
    new["dns_options"] = _merged(new["dns_options"], flags.dns_option_rm, map(pc.dns_option, flags.dns_option_add), str)
    sysctls = _merged(new["sysctls"].items(), flags.sysctl_rm, map(pc.sysctl, flags.sysctl_add), lambda kv: kv[0])
    new["sysctls"] = dict(sysctls)
    ulimits = [pc.ulimit(u) for u in flags.ulimit_add]
    new["ulimits"] = _merged(
        new["ulimits"], flags.ulimit_rm, ({"name": u.name, "soft": u.soft, "hard": u.hard} for u in ulimits), _name
    )


def _name(item: Mapping[str, Any]) -> Any:
    return item["name"]


def _target(item: Mapping[str, Any]) -> Any:
    return item["target"]


def _references(texts: Iterable[str], kind: str) -> list[dict[str, Any]]:
    from pyswarm.model.codec import file_reference_to_dict
    from pyswarm.model.secret import file_reference

    return [file_reference_to_dict(file_reference(text, kind)) for text in texts]  # type: ignore[arg-type]
