"""Parsing and checking of a service's container settings: `--mount`, `--limit-*`/`--reserve-*`, health
checks, ulimits, sysctls, capabilities, signals, log options, the hostname template and --env-file. Pure.

Every error is a `SpecError` with a message fit to show the user as is. `check_container_settings` checks a
whole spec's settings at once: the API runs it on every spec it is given, whoever built it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from pyswarm.model import HealthCheck, Mount, MountType, Resources, ServiceSpec, Ulimit
from pyswarm.model.parse import SpecError, duration, label

_MAX_TEXT = 4096
_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?$", re.IGNORECASE)
_MIN_RESERVED_MEMORY = 4 * 1024 * 1024  # swarm's floor, as for --reserve-memory
_CAPABILITY = re.compile(r"^(CAP_)?[A-Z_]{2,32}$")
_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")
_ULIMIT_NAMES = frozenset(
    [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)
_SIGNALS = frozenset(
    [
        "ABRT",
        "ALRM",
        "BUS",
        "CHLD",
        "CONT",
        "FPE",
        "HUP",
        "ILL",
        "INT",
        "IO",
        "KILL",
        "PIPE",
        "PROF",
        "PWR",
        "QUIT",
        "SEGV",
        "STKFLT",
        "STOP",
        "SYS",
        "TERM",
        "TRAP",
        "TSTP",
        "TTIN",
        "TTOU",
        "URG",
        "USR1",
        "USR2",
        "VTALRM",
        "WINCH",
        "XCPU",
        "XFSZ",
    ]
)
_LOG_DRIVER = re.compile(r"^[a-z0-9][a-z0-9_.\-/:]{0,63}$")
_OPTION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,31})?$")
_HOSTNAME_TEMPLATE = re.compile(
    r"\{\{\s*\.(Service\.Name|Service\.ID|Task\.Slot|Task\.ID|Task\.Name|Node\.Hostname|Node\.ID)\s*\}\}"
)
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,62})?$")
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}$")
_PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
_DNS_OPTION = re.compile(r"^[A-Za-z0-9_\-]+(:[0-9]+)?$")
_SEARCH_DOMAIN = re.compile(r"^[A-Za-z0-9.\-]{1,253}$")


def memory_bytes(text: str, what: str = "memory") -> int:
    """`512m`, `1g`, `1.5GiB`, `4096` (bytes): docker's RAMInBytes."""
    match = _MEMORY.fullmatch(str(text).strip())
    if not match:
        raise SpecError(f"invalid {what} {str(text)[:40]!r}: e.g. 512m, 1g, 1.5GiB or a number of bytes")
    value = int(float(match[1]) * _UNITS[(match[2] or "b").lower()])
    if value > 2**62:
        raise SpecError(f"invalid {what} {text!r}: too large")
    return value


def nano_cpus(text: str, what: str = "CPUs") -> int:
    """`0.5` or `2`: CPUs as nano CPUs (docker's NanoCPUs)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise SpecError(f"invalid {what} {str(text)[:40]!r}: a number of CPUs, e.g. 0.5 or 2") from None
    if not 0 <= value <= 4096 or value != value:
        raise SpecError(f"invalid {what} {text!r}: must be from 0 to 4096")
    return round(value * 1e9)


def resources(
    limit_cpu: str | None = None,
    limit_memory: str | None = None,
    limit_pids: str | None = None,
    reserve_cpu: str | None = None,
    reserve_memory: str | None = None,
    base: Resources | None = None,
) -> Resources:
    """The flags given, over `base` (the current resources, for `service update`)."""
    result = base or Resources()
    if limit_cpu is not None:
        result = replace(result, limit_nano_cpus=nano_cpus(limit_cpu, "--limit-cpu"))
    if limit_memory is not None:
        result = replace(result, limit_memory=memory_bytes(limit_memory, "--limit-memory"))
    if limit_pids is not None:
        if not str(limit_pids).isdigit():
            raise SpecError(f"invalid --limit-pids {limit_pids!r}: must be a whole number")
        result = replace(result, limit_pids=int(limit_pids))
    if reserve_cpu is not None:
        result = replace(result, reserve_nano_cpus=nano_cpus(reserve_cpu, "--reserve-cpu"))
    if reserve_memory is not None:
        result = replace(result, reserve_memory=memory_bytes(reserve_memory, "--reserve-memory"))
    check_resources(result)
    return result


def check_resources(res: Resources) -> Resources:
    for name in ("limit_nano_cpus", "limit_memory", "limit_pids", "reserve_nano_cpus", "reserve_memory"):
        if getattr(res, name) < 0:
            raise SpecError(f"invalid resources: {name} cannot be negative")
    if 0 < res.reserve_nano_cpus < 1_000_000:
        raise SpecError("invalid --reserve-cpu: the smallest reservation is 0.001 CPUs")
    if 0 < res.reserve_memory < _MIN_RESERVED_MEMORY:
        raise SpecError("invalid --reserve-memory: the smallest reservation is 4MiB")
    if 0 < res.limit_memory < _MIN_RESERVED_MEMORY:
        raise SpecError("invalid --limit-memory: the smallest limit is 4MiB")
    if res.limit_nano_cpus and res.reserve_nano_cpus > res.limit_nano_cpus:
        raise SpecError("invalid resources: --reserve-cpu is more than --limit-cpu")
    if res.limit_memory and res.reserve_memory > res.limit_memory:
        raise SpecError("invalid resources: --reserve-memory is more than --limit-memory")
    return res


def _bool_option(key: str, value: str | None) -> bool:
    if value is None or value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise SpecError(f"invalid mount option {key}={value!r}: expected true or false")


def mount(text: str) -> Mount:
    """docker's `--mount type=volume,source=data,target=/data,readonly` (csv of key=value)."""
    fields: dict[str, str | None] = {}
    labels: dict[str, str] = {}
    for part in str(text).split(","):
        key, sep, value = part.strip().partition("=")
        key = key.strip().lower()
        if not key:
            raise SpecError(f"invalid mount {text[:80]!r}: empty field")
        if key == "volume-label":
            label_key, label_value = label(value)
            labels[label_key] = label_value
            continue
        key = {"src": "source", "dst": "target", "destination": "target", "ro": "readonly"}.get(key, key)
        if key not in (
            "type", "source", "target", "readonly", "volume-driver", "volume-nocopy", "bind-propagation",
            "tmpfs-size", "tmpfs-mode", "consistency",
        ):  # fmt: skip
            raise SpecError(f"invalid mount {text[:80]!r}: unknown field {key!r}")
        fields[key] = value.strip() if sep else None
    kind_text = fields.get("type") or "volume"
    try:
        kind = MountType(kind_text)
    except ValueError:
        raise SpecError(f"invalid mount {text[:80]!r}: type is volume, bind or tmpfs") from None
    built = Mount(
        type=kind,
        target=fields.get("target") or "",
        source=fields.get("source") or "",
        readonly=_bool_option("readonly", fields["readonly"]) if "readonly" in fields else False,
        volume_driver=fields.get("volume-driver") or "",
        volume_labels=labels,
        volume_nocopy=_bool_option("volume-nocopy", fields["volume-nocopy"]) if "volume-nocopy" in fields else False,
        bind_propagation=fields.get("bind-propagation") or "",
        tmpfs_size=memory_bytes(fields["tmpfs-size"] or "", "tmpfs-size") if "tmpfs-size" in fields else 0,
        tmpfs_mode=_octal(fields["tmpfs-mode"] or "", "tmpfs-mode") if "tmpfs-mode" in fields else 0,
    )
    return check_mount(built)


def _octal(text: str, what: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise SpecError(f"invalid {what} {text[:20]!r}: an octal mode, e.g. 0755") from None
    if not 0 <= value <= 0o7777:
        raise SpecError(f"invalid {what} {text!r}: an octal mode, e.g. 0755")
    return value


def _absolute_path(path: str, what: str) -> str:
    if not path.startswith("/") or "\x00" in path or len(path) > _MAX_TEXT or "/../" in path + "/":
        raise SpecError(f"invalid mount {what} {path[:80]!r}: must be an absolute path")
    return path


def check_mount(m: Mount) -> Mount:
    """One mount's fields, checked together (the API's mounts come here too)."""
    if not m.target:
        raise SpecError("invalid mount: target is required")
    _absolute_path(m.target, "target")
    if m.target == "/":
        raise SpecError("invalid mount target '/': cannot mount over the container's root")
    if m.type is MountType.BIND:
        if not m.source:
            raise SpecError(f"invalid mount for {m.target}: a bind mount needs a source (a path on the node)")
        _absolute_path(m.source, "source")
    elif m.source and m.type is MountType.TMPFS:
        raise SpecError(f"invalid mount for {m.target}: a tmpfs mount takes no source")
    elif m.source and not _VOLUME_NAME.fullmatch(m.source):
        raise SpecError(f"invalid volume name {m.source[:80]!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]")
    if m.type is not MountType.VOLUME and (m.volume_driver or m.volume_labels or m.volume_nocopy):
        raise SpecError(f"invalid mount for {m.target}: volume options are for type=volume only")
    if m.type is not MountType.BIND and m.bind_propagation:
        raise SpecError(f"invalid mount for {m.target}: bind-propagation is for type=bind only")
    if m.bind_propagation and m.bind_propagation not in _PROPAGATIONS:
        raise SpecError(f"invalid bind-propagation {m.bind_propagation!r}: expected {'|'.join(_PROPAGATIONS)}")
    if m.type is not MountType.TMPFS and (m.tmpfs_size or m.tmpfs_mode):
        raise SpecError(f"invalid mount for {m.target}: tmpfs options are for type=tmpfs only")
    if m.volume_driver and not _LOG_DRIVER.fullmatch(m.volume_driver):
        raise SpecError(f"invalid volume driver {m.volume_driver[:80]!r}")
    return m


def ulimit(text: str) -> Ulimit:
    """`nofile=1024:2048` or `nofile=1024` (soft = hard)."""
    name, sep, values = str(text).partition("=")
    soft_text, _, hard_text = values.partition(":")
    if not sep or name not in _ULIMIT_NAMES:
        raise SpecError(f"invalid ulimit {text[:80]!r}: expected NAME=SOFT[:HARD], NAME one of {sorted(_ULIMIT_NAMES)}")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        raise SpecError(f"invalid ulimit {text[:80]!r}: the limits are whole numbers") from None
    return check_ulimit(Ulimit(name, soft, hard))


def check_ulimit(u: Ulimit) -> Ulimit:
    if u.name not in _ULIMIT_NAMES:
        raise SpecError(f"invalid ulimit name {u.name[:40]!r}")
    if u.soft < -1 or u.hard < -1 or (u.hard != -1 and u.soft > u.hard):
        raise SpecError(f"invalid ulimit {u.name}: soft limit {u.soft} is over the hard limit {u.hard}")
    return u


def sysctl(text: str) -> tuple[str, str]:
    key, sep, value = str(text).partition("=")
    if not sep:
        raise SpecError(f"invalid sysctl {text[:80]!r}: expected KEY=VALUE, e.g. net.core.somaxconn=1024")
    return check_sysctl(key.strip(), value.strip())


def check_sysctl(key: str, value: str) -> tuple[str, str]:
    if not _SYSCTL_KEY.fullmatch(key) or len(value) > 256 or "\x00" in value or "\n" in value:
        raise SpecError(f"invalid sysctl {key[:80]!r}: expected KEY=VALUE, e.g. net.core.somaxconn=1024")
    return key, value


def capability(text: str) -> str:
    """`NET_ADMIN`, `net_admin` or `CAP_NET_ADMIN` -> `CAP_NET_ADMIN`; `ALL` stays ALL."""
    upper = str(text).strip().upper()
    if upper == "ALL":
        return upper
    if not _CAPABILITY.fullmatch(upper):
        raise SpecError(f"invalid capability {text[:40]!r}: e.g. NET_ADMIN or CAP_NET_ADMIN")
    return upper if upper.startswith("CAP_") else "CAP_" + upper


def stop_signal(text: str) -> str:
    """`SIGTERM`, `TERM` or a number."""
    value = str(text).strip().upper()
    if value.isdigit() and 1 <= int(value) <= 64:
        return value
    name = value.removeprefix("SIG")
    if name not in _SIGNALS and not re.fullmatch(r"RTMIN(\+\d{1,2})?|RTMAX(-\d{1,2})?", name):
        raise SpecError(f"invalid stop signal {text[:40]!r}: e.g. SIGTERM, SIGQUIT or 15")
    return "SIG" + name


def option(text: str, what: str) -> tuple[str, str]:
    """A `--log-opt KEY=VALUE`."""
    key, sep, value = str(text).partition("=")
    if not sep or not _OPTION_KEY.fullmatch(key) or len(value) > _MAX_TEXT or "\x00" in value:
        raise SpecError(f"invalid {what} {text[:80]!r}: expected KEY=VALUE")
    return key, value


def log_driver(text: str) -> str:
    if not _LOG_DRIVER.fullmatch(text):
        raise SpecError(f"invalid log driver {text[:40]!r}: e.g. json-file, local or syslog")
    return text


def user(text: str) -> str:
    if text and not _USER.fullmatch(text):
        raise SpecError(f"invalid user {text[:40]!r}: expected NAME|UID[:GROUP|GID]")
    return text


def workdir(text: str) -> str:
    if text and (not text.startswith("/") or "\x00" in text or len(text) > _MAX_TEXT):
        raise SpecError(f"invalid working directory {text[:80]!r}: must be an absolute path")
    return text


def hostname(text: str) -> str:
    """A hostname, or a template of swarm's (`{{.Service.Name}}-{{.Task.Slot}}`)."""
    if not text:
        return text
    filled = _HOSTNAME_TEMPLATE.sub("x", text)
    if "{{" in filled or "}}" in filled:
        raise SpecError(
            f"invalid hostname template {text[:80]!r}: use {{{{.Service.Name}}}}, {{{{.Service.ID}}}}, "
            "{{.Task.Slot}}, {{.Task.ID}}, {{.Task.Name}}, {{.Node.Hostname}} or {{.Node.ID}}"
        )
    if not _HOSTNAME.fullmatch(filled):
        raise SpecError(f"invalid hostname {text[:80]!r}: letters, digits, '.' and '-', at most 63 characters")
    return text


def expand_hostname(template: str, values: Mapping[str, str]) -> str:
    """The hostname for one task: `values` maps Service.Name, Task.Slot, ... to their values."""
    text = _HOSTNAME_TEMPLATE.sub(lambda m: values.get(m[1], ""), template)
    return text[:63].strip(".-") or "task"


def dns_server(text: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise SpecError(f"invalid DNS server {text[:40]!r}: an IP address") from None


def dns_search(text: str) -> str:
    if not _SEARCH_DOMAIN.fullmatch(text.strip()):
        raise SpecError(f"invalid DNS search domain {text[:80]!r}")
    return text.strip()


def dns_option(text: str) -> str:
    if not _DNS_OPTION.fullmatch(text.strip()):
        raise SpecError(f"invalid DNS option {text[:40]!r}: e.g. ndots:2 or rotate")
    return text.strip()


def healthcheck(
    cmd: str | None = None,
    interval: str | None = None,
    timeout: str | None = None,
    retries: str | None = None,
    start_period: str | None = None,
    disabled: bool = False,
    base: HealthCheck | None = None,
) -> HealthCheck | None:
    """The --health-* flags over `base`; None when none is given and there is no base (the image's own)."""
    given = [value for value in (cmd, interval, timeout, retries, start_period) if value is not None]
    if disabled:
        if given:
            raise SpecError("--no-healthcheck conflicts with --health-* options")
        return HealthCheck(test=("NONE",))
    if not given:
        return base
    check = base if base is not None and not base.disabled else HealthCheck()
    if cmd is not None:
        check = replace(check, test=("CMD-SHELL", cmd) if cmd else ())
    if interval is not None:
        check = replace(check, interval=duration(interval))
    if timeout is not None:
        check = replace(check, timeout=duration(timeout))
    if start_period is not None:
        check = replace(check, start_period=duration(start_period))
    if retries is not None:
        if not str(retries).isdigit():
            raise SpecError(f"invalid --health-retries {retries!r}: must be a whole number")
        check = replace(check, retries=int(retries))
    return check_healthcheck(check)


def check_healthcheck(check: HealthCheck) -> HealthCheck:
    test = check.test
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise SpecError("invalid health check: its test starts with NONE, CMD or CMD-SHELL")
    if (test and test[0] == "NONE" and len(test) > 1) or (test and test[0] != "NONE" and len(test) < 2):
        raise SpecError("invalid health check test: CMD-SHELL takes one command, CMD at least one argument")
    if any("\x00" in part or len(part) > _MAX_TEXT for part in test):
        raise SpecError("invalid health check command")
    for name in ("interval", "timeout", "start_period"):
        value = getattr(check, name)
        if value and value < 0.001:
            raise SpecError(f"invalid --health-{name.replace('_', '-')}: at least 1ms")
    if check.retries < 0 or check.retries > 10000:
        raise SpecError("invalid --health-retries: from 0 to 10000")
    return check


def env_file(text: str, lookup: Mapping[str, str]) -> list[str]:
    """An --env-file's lines: `KEY=VALUE`, or `KEY` (its value taken from `lookup`, the caller's environment,
    and left out when unset), blank lines and `#` comments skipped. Docker's rules."""
    result: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise SpecError(f"invalid env file line {number}: variable {key[:40]!r} contains whitespaces")
        if sep:
            result.append(f"{key}={value}")
        elif key in lookup:
            result.append(f"{key}={lookup[key]}")
    return result


def check_container_settings(spec: ServiceSpec) -> ServiceSpec:
    """Every container setting of `spec` checked, whoever built it (the API runs this on each spec)."""
    for m in spec.mounts:
        check_mount(m)
    _unique((m.target for m in spec.mounts), "mount target")
    check_resources(spec.resources)
    if spec.healthcheck is not None:
        check_healthcheck(spec.healthcheck)
    for u in spec.ulimits:
        check_ulimit(u)
    _unique((u.name for u in spec.ulimits), "ulimit")
    for key, value in spec.sysctls.items():
        check_sysctl(key, value)
    for cap in (*spec.cap_add, *spec.cap_drop):
        capability(cap)
    for server in spec.dns:
        dns_server(server)
    for domain in spec.dns_search:
        dns_search(domain)
    for opt in spec.dns_options:
        dns_option(opt)
    if spec.log_driver:
        log_driver(spec.log_driver)
    for key, value in spec.log_opts.items():
        option(f"{key}={value}", "--log-opt")
    if spec.log_opts and not spec.log_driver:
        raise SpecError("--log-opt needs --log-driver")
    if spec.stop_signal:
        stop_signal(spec.stop_signal)
    user(spec.user)
    workdir(spec.workdir)
    hostname(spec.hostname)
    if spec.entrypoint is not None and any("\x00" in part for part in spec.entrypoint):
        raise SpecError("entrypoint arguments cannot contain NUL bytes")
    return spec


def _unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise SpecError(f"duplicate {what} {value!r}")
        seen.add(value)
